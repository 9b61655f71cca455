"""meSimp's units: what a prune removes in each kind of layer (the *action* of importance -> selection ->
action; notebooks/05_mesimp.ipynb for the MLP, notebooks/07_lstm_pos_tagging.ipynb for the LSTM).

A unit type wraps one layer and the next layer that reads its outputs, and knows
    ``attach(record)``  how the layer reports its hits to an ``ActivityRecord`` (importance)
    ``alive()``         which units are in the model: the layer's own mask is the one place that says it
                        (``hooks.grad_mask`` / ``cell_mask``; no mask: all of them)
    ``keep(idx, ...)``  physical removal: ``index_select`` of the layer's rows *and* the next layer's
                        columns, with the optimizer state sliced along (``slice_param``)
    ``mask(dead, ...)`` the mask realisation: the removed units' parameters and optimizer state held at zero
                        and the layer's gradient mask set

``LinearUnits``: the output rows of a ``MePropLinear``. ``LSTMCells``: the memory cells of one
``MePropLSTM`` direction; cell j is rows j, h+j, 2h+j, 3h+j of every gate parameter and column j of
``weight_hh``. Several units may feed one next layer (a BiLSTM's two directions): ``offset`` is where this
unit's block of columns starts in it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LSTMCells", "LinearUnits", "slice_param", "zero_param"]


def slice_param(module: nn.Module, name: str, index: torch.Tensor, dim: int, optimizer) -> None:
    """Keep ``index`` along ``dim`` of ``module.<name>``: a new, smaller Parameter replaces
    the old one in the module *and* in the optimizer (its param group and its state, sliced
    the same way: Adam's moments, AdaGrad's sums; the step count is kept).

    A new Parameter object (rather than resizing ``.data``) is needed because autograd
    caches a leaf's shape in its gradient accumulator."""
    old = getattr(module, name)
    old_len = old.shape[dim]
    new = nn.Parameter(old.detach().index_select(dim, index).contiguous(), requires_grad=old.requires_grad)
    setattr(module, name, new)
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    state = optimizer.state.pop(old, None)
    if state:
        optimizer.state[new] = {
            key: v.index_select(dim, index).contiguous()
            if torch.is_tensor(v) and v.dim() == old.dim() and v.shape[dim] == old_len
            else v
            for key, v in state.items()
        }


def zero_param(param: nn.Parameter, index: torch.Tensor, dim: int, optimizer) -> None:
    """Hold ``index`` along ``dim`` of ``param`` at zero, with its optimizer state (every state tensor of
    the parameter's shape: Adam's moments, AdaGrad's sums, momentum; not the step count)."""
    with torch.no_grad():
        param.data.index_fill_(dim, index, 0.0)
    if optimizer is None:
        return
    for key, v in optimizer.state.get(param, {}).items():
        if key != "step" and torch.is_tensor(v) and v.shape == param.shape:
            v.index_fill_(dim, index, 0.0)


def _next_columns(next_layer: nn.Module, offset: int, width: int, idx: torch.Tensor) -> torch.Tensor:
    """The next layer's input columns that stay when this unit block (``width`` columns from ``offset``)
    keeps ``idx``."""
    total = next_layer.weight.shape[1]
    if offset == 0 and width == total:
        return idx
    return torch.cat([torch.arange(offset, device=idx.device), offset + idx,
                      torch.arange(offset + width, total, device=idx.device)])


class _Units:
    """What every unit type shares: the layer, the next layer, the record it reports to."""

    def __init__(self, layer: nn.Module, next_layer: nn.Module):
        self.layer, self.next_layer = layer, next_layer

    @property
    def k(self) -> int | None:
        """The layer's top-k count now (the record's heap rule keeps this original k)."""
        return self.layer.k_effective

    def alive(self) -> torch.Tensor:
        """bool (width,): the units still in the model, read from the layer's mask."""
        mask = self._mask()
        if mask is None:
            return torch.ones(self.width, dtype=torch.bool, device=self.device)
        return mask != 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(width={self.width}, alive={int(self.alive().sum())})"


class LinearUnits(_Units):
    """The output rows of a ``MePropLinear`` (``weight`` [out, in], ``bias``) feeding ``next_layer``.

    The mask realisation leaves the next layer's columns as they are, as the released code did: a masked
    unit's pre-activation is exactly 0 (weights, bias and gradient held at zero), so those columns only
    ever multiply the activation of 0.
    """

    @property
    def width(self) -> int:
        return self.layer.weight.shape[0]

    @property
    def device(self) -> torch.device:
        return self.layer.weight.device

    def _mask(self):
        return self.layer.hooks.grad_mask

    def attach(self, record) -> None:
        self.layer.hooks.observers.append(record)  # called in backward: record.observe(g, selection, plan)

    def detach(self, record) -> None:
        if record in self.layer.hooks.observers:
            self.layer.hooks.observers.remove(record)

    def keep(self, idx: torch.Tensor, offset: int, optimizer) -> None:
        cols = _next_columns(self.next_layer, offset, self.width, idx)
        slice_param(self.layer, "weight", idx, 0, optimizer)
        if self.layer.bias is not None:
            slice_param(self.layer, "bias", idx, 0, optimizer)
        slice_param(self.next_layer, "weight", cols, 1, optimizer)

    def mask(self, dead: torch.Tensor, alive: torch.Tensor, offset: int, optimizer) -> None:
        zero_param(self.layer.weight, dead, 0, optimizer)
        if self.layer.bias is not None:
            zero_param(self.layer.bias, dead, 0, optimizer)
        self.layer.hooks.grad_mask = alive.to(self.layer.weight.dtype)


class LSTMCells(_Units):
    """The memory cells of one ``MePropLSTM`` direction feeding ``next_layer`` (its block of columns there
    starts at the offset the simplifier gives). The layer reports per-token cell hits to its ``records``."""

    @property
    def width(self) -> int:
        return self.layer.hidden_size

    @property
    def device(self) -> torch.device:
        return self.layer.weight_hh.device

    def _mask(self):
        return self.layer.cell_mask

    def attach(self, record) -> None:
        self.layer.records.append(record)  # called in backward: record.observe_cells(hits)

    def detach(self, record) -> None:
        if record in self.layer.records:
            self.layer.records.remove(record)

    def keep(self, idx: torch.Tensor, offset: int, optimizer) -> None:
        cols = _next_columns(self.next_layer, offset, self.width, idx)
        self.layer.keep_cells(idx, optimizer)
        slice_param(self.next_layer, "weight", cols, 1, optimizer)

    def mask(self, dead: torch.Tensor, alive: torch.Tensor, offset: int, optimizer) -> None:
        layer = self.layer
        rows = torch.cat([dead + g * layer.hidden_size for g in range(4)])
        for p in (layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh):
            if p is not None:
                zero_param(p, rows, 0, optimizer)
        zero_param(layer.weight_hh, dead, 1, optimizer)
        zero_param(self.next_layer.weight, offset + dead, 1, optimizer)
        layer.cell_mask = alive.to(layer.weight_hh.dtype)
