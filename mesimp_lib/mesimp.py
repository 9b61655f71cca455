"""meSimp: simplify a model from the meProp record (METHODS.md section 2).

Importance -> selection -> action, as Torch-Pruning splits it:
    importance  ``ActivityRecord``: per hidden unit, how many examples had it among their
                top-k (``hits``) out of ``seen`` examples since the last prune
    selection   ``ActivityRecord.keep_mask``: unit j is removed if
                ``hits[j] < floor(prune_rate * seen)``; at least ``min_units`` stay
    action      ``mask`` (shapes kept, removed units held at zero, no compute saved; what the
                released code did) or ``physical`` (rows of W_l and b_l deleted *and* the
                matching input columns of W_{l+1}, with the optimizer state sliced along;
                the paper suggested this but did not implement it)

The record is cleared only at a prune; removed units never come back; the output layer is
never pruned. ``Simplifier`` ties it together for an ``MLP``; ``cycle_phase`` gives the
authors' cycle schedule (even cycles prune, odd cycles train with the structure fixed).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .checkpoint import load_model, save_model  # noqa: F401 (re-exported: they live in checkpoint.py)
from .meprop import MePropLinear, heap_fillers, heap_hits, select_per_example
from .validate import check_bool, check_choice, check_device, check_float, check_int, check_size

__all__ = [
    "REALISATIONS",
    "RECORDS",
    "RESETS",
    "ActivityRecord",
    "Simplifier",
    "authors_reset_now",
    "cycle_phase",
    "load_model",
    "reset_optimizer_state",
    "save_model",
]

RECORDS = ("per_example", "unified")
REALISATIONS = ("mask", "physical")
RESETS = ("fresh", "moments", "authors")


def check_simplifier_args(prune_rate, realisation: str, record: str, count_zero_hits: bool,
                          min_units: int) -> tuple[float, int]:
    """Check the arguments every simplifier takes; returns (prune_rate as a float, min_units as an int)."""
    check_choice("realisation", realisation, REALISATIONS)
    check_choice("record", record, RECORDS)
    check_bool("count_zero_hits", count_zero_hits)
    return check_float("prune_rate", prune_rate, 0.0, 1.0), check_int("min_units", min_units, 1)


class ActivityRecord:
    """The meSimp record of one layer: ``hits[j]`` (examples whose top-k set held unit j)
    and ``seen`` (examples back-propagated), both since the last prune.

    Attached to a ``MePropLinear`` as an observer, it is updated in backward.

    Args:
        width: units of the layer now.
        record: "per_example" (default): hits counted per example even when the layer
            selects in unified mode (then a per-example top-k is computed for the record
            only); "unified": in unified mode every example counts the batch's k units.
        count_zero_hits: count the zero-gradient "fillers" the authors' C# top-k heap keeps in a row
            with fewer than k non-zeros (``meprop.heap_fillers``), as its record did. Default False:
            only non-zero entries count. Needs ``k``; the rule is applied over the layer's original
            positions (``positions`` maps a physically shrunk layer's rows back to them), so the mask
            and physical realisations count the same hits, and it holds when the layer has become
            narrower than k (then its backward is dense, but the C# heap still ran over all positions).
            Random selection and the unified record count every selected entry instead.
        k: the layer's top-k count at its original width (None: dense; every unit then counts).
    """

    def __init__(self, width: int, record: str = "per_example", count_zero_hits: bool = False, device=None,
                 k: int | None = None):
        width = check_size("width", width)
        check_choice("record", record, RECORDS)
        check_bool("count_zero_hits", count_zero_hits)
        check_device("device", device, optional=True)
        k = check_int("k", k, 1, width, optional=True)
        self.record = record
        self.count_zero_hits = count_zero_hits
        self.k = k
        self.full_width = width
        self.positions: torch.Tensor | None = None  # original position of each current unit (None: unchanged)
        self.hits = torch.zeros(width, dtype=torch.int64, device=device)
        self.seen = 0

    @property
    def width(self) -> int:
        return self.hits.numel()

    def clear(self) -> None:
        self.hits.zero_()
        self.seen = 0

    def observe(self, g: torch.Tensor, selection, plan) -> None:
        """Called by the layer's backward with its (masked) output gradient and selection."""
        n = g.shape[0]
        self.seen += n
        per_example_topk = (isinstance(selection, tuple) and plan.mode == "per_example"
                            or not isinstance(selection, tuple) and self.record == "per_example")
        if self.count_zero_hits and self.k is not None and per_example_topk:
            top = selection[0] if isinstance(selection, tuple) else None
            self.hits += self._heap_hits(g, top)
            return
        if selection is None:  # dense backward (k >= width): every unit with a gradient is active
            add = (g != 0).sum(0) if not self.count_zero_hits else torch.full_like(self.hits, n)
            self.hits += add.to(self.hits.dtype)
            return
        if isinstance(selection, tuple):  # per example / random: (indices, kept values)
            idx, kept = selection
        elif self.record == "per_example":  # unified selection, per-example record
            idx = select_per_example(g, selection.numel())
            kept = g.gather(1, idx)
        else:  # unified record: every example counts the batch's k units
            hit = torch.ones_like(g[:, selection], dtype=torch.bool) if self.count_zero_hits else g[:, selection] != 0
            self.hits.index_add_(0, selection, hit.sum(0).to(self.hits.dtype))
            return
        flat = idx.reshape(-1)
        if not self.count_zero_hits:
            flat = flat[kept.reshape(-1) != 0]
        self.hits.index_add_(0, flat, torch.ones_like(flat, dtype=self.hits.dtype))

    def _heap_hits(self, g: torch.Tensor, top: torch.Tensor | None) -> torch.Tensor:
        """``meprop.heap_hits`` with the heap's fillers found over the layer's original positions (removed
        units have no gradient, as under the C#'s mask). ``top``: the layer's per-example selection or None."""
        fill = heap_fillers(g != 0, self.k, self.full_width, self.positions) if self.positions is not None else None
        return heap_hits(g, self.k, top, fill).to(self.hits.dtype)

    def threshold(self, prune_rate: float) -> int:
        """Units with fewer hits than this are removed: ``floor(prune_rate * seen)``."""
        return math.floor(check_float("prune_rate", prune_rate, 0.0, 1.0) * self.seen)

    def keep_mask(self, prune_rate: float, min_units: int = 1, alive: torch.Tensor | None = None):
        """Which units survive a prune now. Returns (keep bool (width,), kept_minimum: bool).

        ``alive`` (mask realisation) marks units still in the model; removed ones stay removed.
        If fewer than ``min_units`` would survive, the ``min_units`` alive units with the most
        hits are kept (ties: lowest index) and ``kept_minimum`` is True.
        """
        keep = self.hits >= self.threshold(prune_rate)
        if alive is not None:
            keep &= alive
        n_alive = int(alive.sum()) if alive is not None else self.width
        need = min(min_units, n_alive)
        if int(keep.sum()) >= need:
            return keep, False
        score = self.hits.double() - torch.arange(self.width, device=self.hits.device) * 1e-9
        if alive is not None:
            score[~alive] = -math.inf
        keep = torch.zeros_like(keep)
        keep[score.topk(need).indices] = True
        return keep, True

    def __repr__(self) -> str:
        return f"ActivityRecord(width={self.width}, seen={self.seen}, record={self.record})"


def cycle_phase(epoch: int, cycle_epochs: int) -> tuple[int, bool]:
    """(cycle index, prunes in this cycle?) for a 0-based epoch: even cycles simplify."""
    cycle = epoch // check_int("cycle_epochs", cycle_epochs, 1)
    return cycle, cycle % 2 == 0


def authors_reset_now(epoch: int, cycle_epochs: int) -> bool:
    """``reset="authors"``: the C# (``Mnist.cs``) zeroes Adam's moments after each of the parts of an epoch
    (``prunes_per_epoch``) when ``(epoch + 1) % cycle_epochs == 0``: in the last epoch of every cycle."""
    return (epoch + 1) % cycle_epochs == 0


def reset_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """``reset="moments"`` / ``"authors"``: zero every state tensor (Adam's moments, AdaGrad's sums) but keep
    the step count, as the authors' C# ``Adam.Prepare`` does."""
    for state in optimizer.state.values():
        for key, v in state.items():
            if key != "step" and torch.is_tensor(v):
                v.zero_()


def _slice_param(module: nn.Module, name: str, index: torch.Tensor, dim: int, optimizer) -> None:
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


def _zero_rows_state(param: nn.Parameter, rows: torch.Tensor, optimizer) -> None:
    with torch.no_grad():
        param.data.index_fill_(0, rows, 0.0)
    if optimizer is None:
        return
    for key, v in optimizer.state.get(param, {}).items():
        if key != "step" and torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == param.shape[0]:
            v.index_fill_(0, rows, 0.0)


class Simplifier:
    """meSimp for an ``MLP`` (hidden ``MePropLinear`` layers, then ``output``).

    Args:
        model: an ``mesimp_lib.MLP`` (anything with ``.hidden`` layers and ``.output``).
        prune_rate: in [0, 1]; unit j is removed if ``hits[j] < floor(prune_rate * seen)``.
        realisation: "physical" (delete rows/columns, slice optimizer state) or "mask".
        record, count_zero_hits: see ``ActivityRecord``.
        min_units: a prune never leaves a layer with fewer units (default 1).

    ``prune(optimizer)`` applies one prune step to every hidden layer and returns the event
    (widths, removed counts, thresholds, which layers were held at ``min_units``).
    ``unit_ids[l]`` maps the current rows of layer l to their original unit numbers.
    """

    def __init__(
        self,
        model: nn.Module,
        prune_rate: float = 0.1,
        realisation: str = "physical",
        record: str = "per_example",
        count_zero_hits: bool = False,
        min_units: int = 1,
    ):
        self.prune_rate, self.min_units = check_simplifier_args(prune_rate, realisation, record, count_zero_hits,
                                                                min_units)
        self.realisation = realisation
        self.model = model
        self.layers: list[MePropLinear] = list(model.hidden)
        self.next_layers: list[nn.Module] = list(model.hidden[1:]) + [model.output]
        for layer in self.layers:
            if not isinstance(layer, MePropLinear):
                raise ValueError(f"meSimp needs MePropLinear hidden layers, got {type(layer).__name__}")
        dev = self.layers[0].weight.device
        self.records = [ActivityRecord(l.out_features, record, count_zero_hits, dev, l.k_effective) for l in self.layers]
        self.unit_ids = [torch.arange(l.out_features, device=dev) for l in self.layers]
        self.alive = [torch.ones(l.out_features, dtype=torch.bool, device=dev) for l in self.layers]
        for layer, rec in zip(self.layers, self.records):
            layer.hooks.observers.append(rec)
        self.events: list[dict] = []

    @property
    def widths(self) -> list[int]:
        """Units still in each hidden layer."""
        return [int(a.sum()) for a in self.alive]

    def detach(self) -> None:
        """Stop recording (removes the observers from the layers)."""
        for layer, rec in zip(self.layers, self.records):
            if rec in layer.hooks.observers:
                layer.hooks.observers.remove(rec)

    def prune(self, optimizer: torch.optim.Optimizer | None = None) -> dict:
        """One prune step on every hidden layer; clears the records."""
        event = {"widths_before": self.widths, "removed": [], "threshold": [], "seen": [], "kept_minimum": []}
        for i, (layer, nxt, rec) in enumerate(zip(self.layers, self.next_layers, self.records)):
            alive = self.alive[i] if self.realisation == "mask" else None
            keep, held = rec.keep_mask(self.prune_rate, self.min_units, alive)
            event["threshold"].append(rec.threshold(self.prune_rate))
            event["seen"].append(rec.seen)
            event["kept_minimum"].append(held)
            if self.realisation == "physical":
                removed = int((~keep).sum())
                if removed:
                    idx = keep.nonzero().squeeze(1)
                    self._remove_physically(layer, nxt, idx, optimizer)
                    self.unit_ids[i] = self.unit_ids[i][idx]
                    self.alive[i] = torch.ones(idx.numel(), dtype=torch.bool, device=idx.device)
                    self.records[i].hits = self.records[i].hits[idx]
                    self.records[i].positions = self.unit_ids[i]
            else:
                newly = self.alive[i] & ~keep
                removed = int(newly.sum())
                self.alive[i] = keep.clone()
                if removed:
                    self._remove_masked(layer, newly.nonzero().squeeze(1), optimizer, self.alive[i])
            event["removed"].append(removed)
            rec.clear()
        event["widths"] = self.widths
        self.events.append(event)
        return event

    @staticmethod
    def _remove_physically(layer: MePropLinear, nxt: nn.Module, idx: torch.Tensor, optimizer) -> None:
        _slice_param(layer, "weight", idx, 0, optimizer)
        if layer.bias is not None:
            _slice_param(layer, "bias", idx, 0, optimizer)
        _slice_param(nxt, "weight", idx, 1, optimizer)

    @staticmethod
    def _remove_masked(layer: MePropLinear, rows: torch.Tensor, optimizer, alive: torch.Tensor) -> None:
        _zero_rows_state(layer.weight, rows, optimizer)
        if layer.bias is not None:
            _zero_rows_state(layer.bias, rows, optimizer)
        layer.hooks.grad_mask = alive.to(layer.weight.dtype)

    def __repr__(self) -> str:
        return (
            f"Simplifier(prune_rate={self.prune_rate}, realisation={self.realisation}, "
            f"widths={self.widths}, prunes={len(self.events)})"
        )
