"""meProp inside an LSTM, and meSimp for LSTM cells (METHODS.md sections 1, 2 "LSTM").

Taught in notebooks/07_lstm_pos_tagging.ipynb (its autograd Function: ``lstm_function.py``).

One direction of an LSTM layer, PyTorch's layout and gate order (i, f, g, o):

    G_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        (B, 4h) gate pre-activations
    i, f, o = sigmoid(G_t[i, f, o]),  g = tanh(G_t[g])
    c_t = f * c_{t-1} + i * g,        h_t = o * tanh(c_t)

Backward is back propagation through time, written out step by step. At every step the
gradient of the gate pre-activations ``dG_t`` (after the nonlinearities' derivatives) is
sparsified **per gate**: each of the four ``[h]`` blocks keeps its own k entries per
example (token), the rest are zeroed. Then

    dh_{t-1} = dG_t(sparse) W_hh           only the 4k selected rows of W_hh, per example
    dx_t     = dG_t(sparse) W_ih           (one ``embedding_bag`` over all steps)
    dW_ih    = sum_t dG_t(sparse)^T x_t    only rows selected by some token get a gradient
    dW_hh    = sum_t dG_t(sparse)^T h_{t-1}
    db       = sum_t dG_t                  dense, as the originals (``sparsify_bias=False``)

The recurrent product and ``dx`` run as ``F.embedding_bag(indices, W, per_sample_weights=
kept values, mode="sum")``: per example k rows of W are gathered and summed, B*4k*h
multiply-adds instead of B*4h*h. The weight gradients are two GEMMs over the union of the
rows any token selected (dense GEMMs when that union is above ``compact_threshold`` of 4h).

Variable lengths: a padded batch ``(B, T, in)`` with ``lengths`` is packed time-major like
``PackedSequence`` (sorted by length, step t holds the first ``batch_sizes[t]`` sentences),
so padding never enters a product, an output or a gradient. ``reverse=True`` runs every
sentence from its own last word to its first.

meSimp (``LSTMSimplifier``: ``mesimp.Simplifier`` over ``units.LSTMCells``): the unit is the memory cell. At each backward the selected
gate indices are mapped to cells (index mod h) and merged over the four gates, so a token
counts at most one hit per cell; ``seen`` counts **tokens** (every time step of every
sentence is one example, as top-k itself is taken per token) **[choice]**. Pruning cell j
removes rows j, h+j, 2h+j, 3h+j of weight_ih, weight_hh and both biases, column j of
weight_hh, and the matching input column of the next layer (for a BiLSTM, inside that
direction's block of the concatenated output). Each direction has its own record and ends
at its own width.

Taught in notebooks/07_lstm_pos_tagging.ipynb. The autograd Function (packed forward, BPTT, the cell hits)
is in ``lstm_function.py``; this module holds the layer, its meSimp constructor and the one-step
teaching version ``step_backward``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .lstm_function import CellHits, LSTMPlan, MePropLSTMFunction, forward_core, pack_index, select_kept
from .meprop import (KERNELS, MODES, MePropStats, TopKWidth, autocast_dtype, check_layer_flags, check_rescale,
                     fused_applies, resolve_k)
from .mesimp import ActivityRecord, Simplifier
from .units import LSTMCells, slice_param
from .validate import check_choice, check_size

__all__ = [
    "GATES",
    "LSTMSimplifier",
    "LSTMStats",
    "MePropLSTM",
    "pack_index",
    "step_backward",
]

GATES = ("i", "f", "g", "o")
LSTM_KERNELS = tuple(k for k in KERNELS if k != "native")  # "native" is MePropLinear's C++ autograd layer


# --------------------------------------------------------------------------- stats


class LSTMStats(MePropStats):
    """``MePropStats`` for one LSTM direction (updated in backward).

    counts[j]      tokens whose selection (the four gates merged) contained cell j
    examples       tokens back-propagated
    last_indices   (N, 4k) gate-row indices selected per token in the last backward
                   (rows of the [4h] gate weights, packed time-major), None dense
    rows_touched   rows of the [4h] gate weights with a gradient (union over the batch)
    macs_done / dense   multiply-adds of the matrix products in backward (recurrence, dx,
                   dW_ih, dW_hh) really done vs a dense BPTT
    """

    @property
    def mean_rows_touched_frac(self) -> float:
        if self.backward_calls == 0:
            return 0.0
        return self.rows_touched_total / (self.backward_calls * 4 * self.width)

    def __repr__(self) -> str:
        return super().__repr__().replace("MePropStats(", "LSTMStats(", 1)


# --------------------------------------------------------------------------- module


class MePropLSTM(TopKWidth, nn.Module):
    """One direction of an LSTM layer with per-gate top-k sparsified BPTT.

    Parameters as ``torch.nn.LSTM`` (layer 0): ``weight_ih`` (4h, in), ``weight_hh`` (4h, h),
    ``bias_ih``, ``bias_hh`` (4h,), gate order i, f, g, o, same initialisation
    (uniform(-1/sqrt(h), 1/sqrt(h)), created in the same order). With k None / 0 / >= h the
    outputs and all gradients equal ``nn.LSTM``'s.

    Args:
        input_size, hidden_size: as ``nn.LSTM``.
        k: entries of each gate's pre-activation gradient kept per token: None or 0 =
            dense; an int count (>= hidden_size is dense); a float in (0, 1] = share of h.
        mode: "per_example" (top-k per token and gate, the paper), "unified" (per step, one
            set per gate for the batch, ranked by sum |g|) or "random" (k uniform per gate).
        reverse: run every sentence from its last word to its first (the backward direction
            of a BiLSTM).
        bias: learn ``bias_ih`` and ``bias_hh``.
        rescale: random mode only (refused in the others): multiply kept entries by h/k.
        sparsify_bias: also sparsify the bias gradient (the originals keep it dense).
        count_zero_hits: count selected entries whose gradient is exactly 0 as hits in ``stats``
            (the rule of ``lstm_function.CellHits``; a meSimp record has its own flag).
        compact_threshold: the weight gradients use GEMMs over the union of selected rows
            when it is at most this share of 4h; otherwise masked dense GEMMs.
        track_stats: keep ``self.stats`` (``LSTMStats``).
        kernel: how a sparse backward computes dx, dW_ih and dW_hh: "torch" (embedding_bag for
            dx, GEMMs over the union of selected rows for dW), "fused" (the native per-example
            kernel of ``mesimp_lib.fused``: 4k rows per token, no GEMM over the union) or
            "auto" (default: fused on a CPU float32/64 layer when the kernels can be built).
            The recurrent product is ``embedding_bag`` in every case.

    Forward: ``lstm(x, lengths=None) -> (B, T, h)``, ``x`` (B, T, input_size) batch-first,
    ``lengths`` (B,) ints (None = all T). Initial state zero; positions beyond a sentence's
    length are 0 in the output and receive no gradient.

    meSimp attaches ``records`` (``ActivityRecord`` objects, updated in backward with
    per-token cell hits) and ``cell_mask`` ((h,) 0/1, the mask realisation).
    """

    def __init__(self, input_size: int, hidden_size: int, k=None, mode: str = "per_example", reverse: bool = False,
                 bias: bool = True, *, rescale: bool = False, sparsify_bias: bool = False,
                 count_zero_hits: bool = False, compact_threshold: float = 0.5, track_stats: bool = True,
                 kernel: str = "auto", device=None, dtype=None):
        super().__init__()
        input_size, hidden_size = check_size("input_size", input_size), check_size("hidden_size", hidden_size)
        check_choice("mode", mode, MODES)
        check_layer_flags(compact_threshold=compact_threshold, bias=bias, reverse=reverse, rescale=rescale,
                          sparsify_bias=sparsify_bias, count_zero_hits=count_zero_hits, track_stats=track_stats,
                          device=device, dtype=dtype)
        check_choice("kernel", kernel, LSTM_KERNELS)
        self.kernel = kernel
        factory = {"device": device, "dtype": dtype}
        h = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * h, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * h, h, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * h, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * h, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        check_rescale(rescale, mode)
        self.mode = mode
        self.reverse = bool(reverse)
        self.rescale = rescale
        self.sparsify_bias = sparsify_bias
        self.count_zero_hits = count_zero_hits
        self.compact_threshold = compact_threshold
        self.track_stats = track_stats
        self.k = k  # validated by the setter
        self.stats = LSTMStats(h, device=self.weight_hh.device)
        self.records: list[ActivityRecord] = []
        self.cell_mask: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            if p is not None:
                nn.init.uniform_(p, -std, std)

    @property
    def input_size(self) -> int:
        return self.weight_ih.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.weight_hh.shape[1]

    @property
    def _topk_width(self) -> int:
        return self.weight_hh.shape[1]

    def _plan(self) -> LSTMPlan:
        check_rescale(self.rescale, self.mode)
        return LSTMPlan(self.k_effective, self.mode, self.rescale, self.sparsify_bias, self.compact_threshold,
                        fused_applies(self.kernel, self.k_effective, self.weight_hh))

    def _observe(self, hits: CellHits, sel, n_tok, touched, macs_done, macs_dense) -> None:
        """Backward's report: ``hits`` gives the per-token cell hits under a rule (computed when asked),
        ``sel`` (N, 4k) the selected gate rows (None dense)."""
        if self.track_stats:
            s = self.stats
            if s.width != self.hidden_size:
                s.reset(self.hidden_size, self.weight_hh.device)
            s.backward_calls += 1
            s.examples += n_tok
            s.last_indices = sel
            s.last_rows_touched = touched
            s.rows_touched_total += touched
            s.macs_done += macs_done
            s.macs_dense += macs_dense
            s.counts += hits.cells(self.count_zero_hits, self.k_effective, self.hidden_size).sum(0).to(s.counts.dtype)
        for rec in self.records:
            rec.observe_cells(hits)

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"x must be (batch, time, input_size), got shape {tuple(x.shape)}")
        b, steps, in_f = x.shape
        if in_f != self.input_size:
            raise ValueError(f"input has {in_f} features in its last dimension; this layer expects "
                             f"input_size={self.input_size}")
        if lengths is None:
            lengths = torch.full((b,), steps, dtype=torch.int64)
        lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
        if lengths.shape != (b,) or (b and (int(lengths.min()) < 1 or int(lengths.max()) > steps)):
            raise ValueError(f"lengths must be (batch,) = ({b},) ints in 1..{steps}, got {lengths.tolist()}")
        flat, bs = pack_index(lengths, steps, self.reverse)
        flat = flat.to(x.device)
        xp = x.reshape(b * steps, in_f).index_select(0, flat)  # (N, in) packed
        hp = self.forward_packed(xp, bs)  # (N, h)
        out = hp.new_zeros(b * steps, self.hidden_size).index_copy(0, flat, hp)
        return out.view(b, steps, self.hidden_size)

    def forward_packed(self, xp: torch.Tensor, batch_sizes: list[int]) -> torch.Tensor:
        """The packed core: ``xp`` (N, in) time-major, step t = the next ``batch_sizes[t]`` rows,
        longest sentences first (``pack_index``). Returns (N, h)."""
        cast = autocast_dtype(xp.device.type)
        if cast is not None:  # compute in the weights' dtype, return the autocast dtype (as MePropLinear)
            with torch.autocast(xp.device.type, enabled=False):
                return self.forward_packed(xp.to(self.weight_ih.dtype), batch_sizes).to(cast)
        params = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        needs_graph = torch.is_grad_enabled() and (xp.requires_grad or any(
            p is not None and p.requires_grad for p in params))
        if not needs_graph:
            bias = None
            if self.bias_ih is not None:
                bias = self.bias_ih + self.bias_hh
            return forward_core(xp, self.weight_ih, self.weight_hh, bias, batch_sizes)[2]
        return MePropLSTMFunction.apply(xp, *params, batch_sizes, self._plan(), self)

    # ------------------------------------------------------------------ meSimp actions

    def keep_cells(self, idx: torch.Tensor, optimizer=None) -> None:
        """Physically keep only cells ``idx`` (sorted): rows j, h+j, 2h+j, 3h+j of every
        gate parameter and column j of weight_hh; optimizer state sliced along."""
        h = self.hidden_size
        rows = torch.cat([idx + g * h for g in range(4)])
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if getattr(self, name) is not None:
                slice_param(self, name, rows, 0, optimizer)
        slice_param(self, "weight_hh", idx, 1, optimizer)
        if self.cell_mask is not None:
            self.cell_mask = self.cell_mask[idx]
        self.stats.reset(self.hidden_size, self.weight_hh.device)  # an int k >= the new width means dense

    def extra_repr(self) -> str:
        k = self.k_effective
        ks = "dense" if k is None else f"{k} per gate ({k / self.hidden_size:.1%} of {self.hidden_size})"
        s = f"{self.input_size}, {self.hidden_size}, k={ks}"
        if k is not None:
            s += f", mode={self.mode}"
        if self.reverse:
            s += ", reverse=True"
        return s

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, reverse: bool = False, k=None, mode: str = "per_example", **kwargs):
        """A copy of layer 0 (``reverse``: its backward direction) of an ``nn.LSTM``."""
        suffix = "_l0_reverse" if reverse else "_l0"
        layer = cls(lstm.input_size, lstm.hidden_size, k, mode, reverse, bias=lstm.bias,
                    device=lstm.weight_ih_l0.device, dtype=lstm.weight_ih_l0.dtype, **kwargs)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                if getattr(layer, name) is not None:
                    getattr(layer, name).copy_(getattr(lstm, name + suffix))
        return layer


# --------------------------------------------------------------------------- meSimp


class LSTMSimplifier(Simplifier):
    """meSimp for LSTM directions feeding one next layer (a BiLSTM tagger's output layer): a
    ``mesimp.Simplifier`` over the directions' memory cells (``units.LSTMCells``).

    Args:
        lstms: the ``MePropLSTM`` directions, in the order their outputs are concatenated
            before ``next_layer`` (forward, backward).
        next_layer: a module with ``weight`` (out, sum of widths), e.g. ``nn.Linear``.
        prune_rate, realisation, record, count_zero_hits, min_units: as ``mesimp.Simplifier``.
            The LSTM record counts per token (see the module docstring) with its own
            ``count_zero_hits`` (the layers' flag is for their ``stats`` only); ``record`` is
            accepted for symmetry and checked, and unified-mode layers are recorded with
            the cells of the batch's selected set that had a non-zero gradient per token.

    ``prune(optimizer)`` prunes every direction on its own and returns the event;
    ``widths`` are the cells alive per direction; ``unit_ids[d]`` the original cell numbers.
    """

    def __init__(self, lstms, next_layer: nn.Module, prune_rate: float = 0.1, realisation: str = "physical",
                 record: str = "per_example", count_zero_hits: bool = False, min_units: int = 1):
        super().__init__(lstm_cells(lstms, next_layer), prune_rate, realisation, record, count_zero_hits, min_units)


def lstm_cells(lstms, next_layer: nn.Module) -> list[LSTMCells]:
    """The units of LSTM directions whose concatenated outputs feed ``next_layer``."""
    lstms = list(lstms)
    for layer in lstms:
        if not isinstance(layer, MePropLSTM):
            raise ValueError(f"LSTMSimplifier needs MePropLSTM layers, got {type(layer).__name__}")
    total = sum(layer.hidden_size for layer in lstms)
    if next_layer.weight.shape[1] != total:
        raise ValueError(f"next_layer has {next_layer.weight.shape[1]} input columns, the LSTMs give {total}")
    return [LSTMCells(layer, next_layer) for layer in lstms]


# --------------------------------------------------------------------------- one step, for teaching


def step_backward(x_t, h_prev, c_prev, weight_ih, weight_hh, bias_ih=None, bias_hh=None, dh=None, dc=None,
                  k=None, mode: str = "per_example") -> dict:
    """One LSTM time step forward and its meProp backward, spelled out (small tensors).

    Args: ``x_t`` (B, in), ``h_prev`` / ``c_prev`` (B, h), PyTorch-layout weights, ``dh`` /
    ``dc`` (B, h) the gradients arriving at h_t and c_t (dc None = 0), ``k`` per gate.

    Returns a dict: ``gates`` {i, f, g, o: (B, h) activations}, ``c``, ``h``,
    ``dgates`` {i, f, g, o: (B, h) gradient of each gate's pre-activation}, ``dG`` (B, 4h)
    dense, ``selected`` {gate: (B, k) indices inside the gate} (all h for a dense k),
    ``kept`` (B, 4h) dG after top-k, ``rows`` (sorted rows of the [4h] gate weights that
    receive a gradient: the union of the batch's selections), ``cells`` (sorted memory
    cells those rows belong to), ``dh_prev``, ``dc_prev``, ``dx``, ``dW_ih``, ``dW_hh``, ``db``
    (dense, as the originals).
    """
    check_choice("mode", mode, MODES)
    hsz = weight_hh.shape[1]
    kk = resolve_k(k, hsz)
    pre = x_t @ weight_ih.t() + h_prev @ weight_hh.t()
    if bias_ih is not None:
        pre = pre + bias_ih
    if bias_hh is not None:
        pre = pre + bias_hh
    i, f, g, o = pre.chunk(4, dim=1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c = f * c_prev + i * g
    tc = c.tanh()
    hh = o * tc
    dh = torch.zeros_like(hh) if dh is None else dh
    dcc = dh * o * (1 - tc ** 2) + (0 if dc is None else dc)
    dgates = {"i": dcc * g * i * (1 - i), "f": dcc * c_prev * f * (1 - f), "g": dcc * i * (1 - g ** 2),
              "o": dh * tc * o * (1 - o)}
    dG = torch.cat([dgates[n] for n in GATES], dim=1)  # (B, 4h)
    if kk is None:
        sel = torch.arange(4 * hsz).expand(dG.shape[0], -1)
    else:
        sel = select_kept(dG.contiguous(), hsz, LSTMPlan(kk, mode, False, False, 0.5))[0]  # (B, 4k)
    kept = torch.zeros_like(dG).scatter_(1, sel, dG.gather(1, sel))
    per_gate = sel.view(dG.shape[0], 4, -1) - torch.arange(0, 4 * hsz, hsz).view(1, 4, 1)
    rows = torch.unique(sel[kept.gather(1, sel) != 0]) if kk is not None else torch.arange(4 * hsz)
    return {
        "gates": {"i": i, "f": f, "g": g, "o": o}, "c": c, "h": hh,
        "dgates": dgates, "dG": dG,
        "selected": {n: per_gate[:, j].sort(1).values for j, n in enumerate(GATES)},
        "kept": kept, "rows": rows, "cells": torch.unique(rows % hsz),
        "dh_prev": kept @ weight_hh, "dc_prev": dcc * f, "dx": kept @ weight_ih,
        "dW_ih": kept.t() @ x_t, "dW_hh": kept.t() @ h_prev, "db": dG.sum(0),
    }
