"""meProp inside an LSTM, and meSimp for LSTM cells (METHODS.md sections 1, 2 "LSTM").

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

meSimp (``LSTMSimplifier``): the unit is the memory cell. At each backward the selected
gate indices are mapped to cells (index mod h) and merged over the four gates, so a token
counts at most one hit per cell; ``seen`` counts **tokens** (every time step of every
sentence is one example, as top-k itself is taken per token) **[choice]**. Pruning cell j
removes rows j, h+j, 2h+j, 3h+j of weight_ih, weight_hh and both biases, column j of
weight_hh, and the matching input column of the next layer (for a BiLSTM, inside that
direction's block of the concatenated output). Each direction has its own record and ends
at its own width.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .meprop import (KERNELS, MODES, MePropStats, TopKWidth, _fused, autocast_dtype, check_layer_flags, check_rescale,
                     fused_applies, heap_fillers, heap_selected, resolve_k)
from .mesimp import ActivityRecord, _slice_param, check_simplifier_args
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


@dataclass(frozen=True)
class _Plan:
    k: int | None
    mode: str
    rescale: bool
    sparsify_bias: bool
    count_zero_hits: bool
    compact_threshold: float
    fused: bool = False  # dx / dW via mesimp_lib.fused's per-example kernel


# --------------------------------------------------------------------------- packing


def pack_index(lengths: torch.Tensor, total_length: int, reverse: bool = False):
    """Where each packed row comes from in a padded ``(B, T)`` batch.

    Returns ``(flat, batch_sizes)``: ``flat`` (N,) indexes ``x.reshape(B*T, ...)`` in packed
    time-major order (step t holds the ``batch_sizes[t]`` longest sentences, longest first;
    ``reverse`` walks each sentence from its own last word), ``batch_sizes`` a list of ints.
    """
    lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
    sorted_len, order = torch.sort(lengths, descending=True, stable=True)
    steps = int(sorted_len[0]) if len(lengths) else 0
    t = torch.arange(steps).unsqueeze(1)  # (T, 1)
    valid = t < sorted_len.unsqueeze(0)  # (T, B) a prefix of every row
    src = (sorted_len.unsqueeze(0) - 1 - t) if reverse else t.expand(-1, len(lengths))
    flat = (order.unsqueeze(0) * total_length + src)[valid]  # (N,)
    batch_sizes = valid.sum(1).tolist()
    return flat, batch_sizes


def _prev_index(batch_sizes: list[int], device) -> torch.Tensor:
    """Packed row of h_{t-1} for every packed row of steps t >= 1."""
    starts = itertools.accumulate(batch_sizes, initial=0)  # first packed row of each step
    parts = [torch.arange(s, s + n) for s, n in zip(starts, batch_sizes[1:])]  # step t reads step t-1's rows
    return torch.cat(parts).to(device) if parts else torch.zeros(0, dtype=torch.int64, device=device)


# --------------------------------------------------------------------------- forward core


def _forward_core(x, w_ih, w_hh, bias, batch_sizes):
    """Packed forward. Returns gate activations G (N, 4h), cells C (N, h), outputs H (N, h)."""
    h = w_hh.shape[1]
    n_tok = x.shape[0]
    G = torch.addmm(bias, x, w_ih.t()) if bias is not None else x @ w_ih.t()  # (N, 4h) input part, one GEMM
    C = x.new_empty(n_tok, h)
    H = x.new_empty(n_tok, h)
    whh_t = w_hh.t()
    o = po = 0
    for t, n in enumerate(batch_sizes):
        g = G[o:o + n]  # (n, 4h)
        c = C[o:o + n]
        if t > 0:
            g.addmm_(H[po:po + n], whh_t)
        g[:, :2 * h].sigmoid_()
        g[:, 2 * h:3 * h].tanh_()
        g[:, 3 * h:].sigmoid_()
        if t > 0:
            torch.mul(g[:, h:2 * h], C[po:po + n], out=c)
            c.addcmul_(g[:, :h], g[:, 2 * h:3 * h])
        else:
            torch.mul(g[:, :h], g[:, 2 * h:3 * h], out=c)
        hh = H[o:o + n]
        torch.tanh(c, out=hh)
        hh.mul_(g[:, 3 * h:])
        po, o = o, o + n
    return G, C, H


class MePropLSTMFunction(torch.autograd.Function):
    """Packed one-direction LSTM with per-gate top-k BPTT. x is (N, in) packed time-major."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, batch_sizes, plan, layer):
        bias = None
        if b_ih is not None:
            bias = b_ih + b_hh if b_hh is not None else b_ih
        elif b_hh is not None:
            bias = b_hh
        G, C, H = _forward_core(x, w_ih, w_hh, bias, batch_sizes)
        ctx.save_for_backward(x, w_ih, w_hh, G, C, H)
        ctx.batch_sizes, ctx.plan, ctx.layer = batch_sizes, plan, layer
        ctx.has_b = (b_ih is not None, b_hh is not None)
        return H

    @staticmethod
    @once_differentiable
    def backward(ctx, dH):
        x, w_ih, w_hh, G, C, H = ctx.saved_tensors
        bs, plan, layer = ctx.batch_sizes, ctx.plan, ctx.layer
        need_x, need_wih, need_whh, need_bih, need_bhh = ctx.needs_input_grad[:5]
        h = w_hh.shape[1]
        n_tok, in_f = x.shape
        k = plan.k
        dense = k is None
        dH = dH.contiguous()
        mask = None
        if layer is not None and layer.cell_mask is not None:  # meSimp mask realisation
            mask = layer.cell_mask.to(x.dtype).repeat(4)  # (4h,)
        offsets = [0]
        for n in bs:
            offsets.append(offsets[-1] + n)
        n0 = bs[0] if bs else 0
        prev = _prev_index(bs, x.device)  # packed row of h_{t-1} / c_{t-1}

        # Everything that does not depend on the recurrence, for all tokens at once:
        #   dG[:, i|f|g] = dc_t * P,  P = [g * i(1-i), c_{t-1} * f(1-f), i * (1-g^2)]
        #   dG[:, o]     = dh_t * Q,  Q = tanh(c_t) * o(1-o)
        #   dc_t         = dh_t * ODT + dc_{t+1} * f_{t+1},  ODT = o * (1 - tanh(c_t)^2)
        i_, f_, g_, o_ = G[:, :h], G[:, h:2 * h], G[:, 2 * h:3 * h], G[:, 3 * h:]
        TC = torch.tanh(C)  # (N, h)
        ODT = o_ * (1 - TC * TC)
        Q = TC * o_ * (1 - o_)
        c_prev = torch.zeros_like(C)
        c_prev[n0:] = C.index_select(0, prev)
        P = torch.stack([g_ * i_ * (1 - i_), c_prev * f_ * (1 - f_), i_ * (1 - g_ * g_)], dim=1)  # (N, 3, h)
        del c_prev

        dG = x.new_empty(n_tok, 4 * h)  # (N, 4h) dense dL/dG (the bias gradient; the selection's input)
        if not dense:
            offs = torch.arange(0, 4 * h, h, device=x.device).view(1, 4, 1)
            idx_steps, kept_steps = [], []
        dh_carry = dc_carry = None
        for t in range(len(bs) - 1, -1, -1):
            o, n = offsets[t], bs[t]
            dh = dH[o:o + n]
            if dh_carry is not None:
                if dh_carry.shape[0] == n:
                    dh = dh + dh_carry
                else:
                    dh = dh.clone()
                    dh[:dh_carry.shape[0]] += dh_carry
            dc = dh * ODT[o:o + n]  # (n, h)
            if dc_carry is not None:
                dc[:dc_carry.shape[0]] += dc_carry
            u = dG[o:o + n]  # (n, 4h)
            torch.mul(dc.unsqueeze(1), P[o:o + n], out=u[:, :3 * h].view(n, 3, h))
            torch.mul(dh, Q[o:o + n], out=u[:, 3 * h:])
            if mask is not None:
                u.mul_(mask)
            if t == 0:
                break
            dc_carry = dc * f_[o:o + n]
            if dense:
                dh_carry = u @ w_hh  # (n, h)
                continue
            sel, kept = _select_kept(u, h, plan, offs)  # (n, 4k) gate rows and their values
            idx_steps.append(sel)
            kept_steps.append(kept)
            # dh_{t-1}: per example the sum of the 4k selected rows of W_hh, weighted
            if plan.mode == "unified":  # one row set for the batch: a small dense product
                dh_carry = kept @ w_hh.index_select(0, sel[0])  # (n, 4k) @ (4k, h)
            else:
                dh_carry = F.embedding_bag(sel, w_hh, per_sample_weights=kept, mode="sum")  # (n, h)
        if not dense and bs:
            sel, kept = _select_kept(dG[:n0], h, plan, offs)  # step 0
            idx_steps.append(sel)
            kept_steps.append(kept)

        grad_x = g_wih = g_whh = None
        g_b = dG.sum(0) if (need_bih or need_bhh) and (dense or not plan.sparsify_bias) else None
        macs_dense = 4 * h * ((n_tok - n0) * h * 2 + n_tok * in_f * (int(need_x) + int(need_wih)))
        cells = sel_all = None
        wants_cells = layer is not None and layer.wants_cells
        if dense:
            if need_x:
                grad_x = dG @ w_ih
            if need_wih:
                g_wih = dG.t() @ x
            if need_whh:
                g_whh = dG[n0:].t() @ H.index_select(0, prev)
            macs_done, touched = macs_dense, 4 * h
            if wants_cells and plan.count_zero_hits:
                cells = _heap_cells(dG, h, plan, layer)
            elif wants_cells:
                cells = (dG.view(n_tok, 4, h) != 0).any(1)
        else:
            sel_all = torch.cat(idx_steps[::-1])  # (N, 4k) in packed (time) order
            kept_all = torch.cat(kept_steps[::-1])
            union = torch.unique(sel_all)
            touched = union.numel()
            computed = 0
            if plan.fused:  # native per-example axpy's: 4k rows per token for dx, dW_ih, dW_hh
                kern = _fused()
                empty = x.new_empty(0)
                if need_x or need_wih:
                    g_wih = x.new_zeros(4 * h, in_f) if need_wih else None
                    dx, _ = kern.per_example_backward(kept_all, sel_all, x.contiguous(), w_ih.contiguous(),
                                                      g_wih if need_wih else empty, need_x, need_wih)
                    grad_x = dx if need_x else None
                if need_whh:
                    g_whh = x.new_zeros(4 * h, h)
                    kern.per_example_backward(kept_all[n0:].contiguous(), sel_all[n0:].contiguous(),
                                              H.index_select(0, prev), w_hh.contiguous(), g_whh, False, True)
                computed = 4 * k
            else:
                if need_x:
                    grad_x = F.embedding_bag(sel_all, w_ih, per_sample_weights=kept_all, mode="sum")  # (N, in)
                if need_wih or need_whh:
                    if touched <= plan.compact_threshold * 4 * h:  # GEMMs over the union's rows only
                        pos = torch.searchsorted(union, sel_all)
                        gu = x.new_zeros(n_tok, touched).scatter_(1, pos, kept_all)  # (N, |U|)
                        if need_wih:
                            g_wih = x.new_zeros(4 * h, in_f).index_copy_(0, union, gu.t() @ x)
                        if need_whh:
                            g_whh = x.new_zeros(4 * h, h).index_copy_(0, union,
                                                                      gu[n0:].t() @ H.index_select(0, prev))
                    else:  # masked dense GEMMs
                        gm = x.new_zeros(n_tok, 4 * h).scatter_(1, sel_all, kept_all)
                        if need_wih:
                            g_wih = gm.t() @ x
                        if need_whh:
                            g_whh = gm[n0:].t() @ H.index_select(0, prev)
                    computed = min(touched, 4 * h) if touched <= plan.compact_threshold * 4 * h else 4 * h
            if (need_bih or need_bhh) and plan.sparsify_bias:
                g_b = x.new_zeros(4 * h).index_add_(0, sel_all.reshape(-1), kept_all.reshape(-1))
            macs_done = 4 * k * ((n_tok - n0) * h + n_tok * in_f * int(need_x))
            if plan.fused:
                macs_done += 4 * k * (n_tok * in_f * int(need_wih) + (n_tok - n0) * h * int(need_whh))
            else:
                macs_done += computed * (n_tok * in_f * int(need_wih) + (n_tok - n0) * h * int(need_whh))
            if wants_cells and plan.count_zero_hits and plan.mode == "per_example":
                cells = _heap_cells(dG, h, plan, layer)
            elif wants_cells:
                hit = kept_all != 0 if not plan.count_zero_hits else torch.ones_like(kept_all, dtype=torch.bool)
                cells = x.new_zeros(n_tok, h).scatter_add_(1, sel_all % h, hit.to(x.dtype)) > 0  # (N, h)

        if layer is not None:
            layer._observe(cells, sel_all, n_tok, touched, macs_done, macs_dense)
        return (grad_x, g_wih, g_whh, g_b if need_bih else None, g_b if need_bhh else None, None, None, None)


def _heap_cells(dG: torch.Tensor, h: int, plan: _Plan, layer) -> torch.Tensor:
    """count_zero_hits: the cells hit per token (N, h) when each gate's top-k is selected as the authors' C# heap
    selects (``meprop.heap_selected``; the C# has no LSTM, so this is the MLP's rule applied per gate), over
    the layer's original cells (``layer.heap_origin`` = (k, width, positions of the current cells or None),
    kept by ``LSTMSimplifier``) so that the mask and physical realisations count alike. Dense with no k: all."""
    n = dG.shape[0]
    k0, width0, pos = layer.heap_origin if layer.heap_origin is not None else (plan.k, h, None)
    if k0 is None:
        return dG.new_ones(n, h, dtype=torch.bool)
    v = dG.reshape(n * 4, h)  # one row per token and gate
    fill = heap_fillers(v != 0, k0, width0, pos) if pos is not None else None
    return heap_selected(v, k0, None, fill).view(n, 4, h).any(1)


def _select_kept(u: torch.Tensor, h: int, plan: _Plan, offs: torch.Tensor):
    """Per-gate selection on dG (n, 4h) -> gate rows (n, 4k) and the kept values (n, 4k)."""
    n = u.shape[0]
    v = u.view(n, 4, h)
    if plan.mode == "per_example":
        idx = v.abs().topk(plan.k, dim=2, sorted=False).indices  # (n, 4, k)
    elif plan.mode == "unified":
        idx = v.abs().sum(0).topk(plan.k, dim=1, sorted=False).indices.unsqueeze(0).expand(n, -1, -1)
    else:  # random
        idx = torch.rand(v.shape, device=u.device).topk(plan.k, dim=2, sorted=False).indices
    sel = (idx + offs).view(n, 4 * plan.k)
    kept = u.gather(1, sel)
    if plan.rescale:
        kept = kept * (h / plan.k)
    return sel, kept


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
        count_zero_hits: count selected entries whose gradient is exactly 0 as hits.
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
        self.heap_origin: tuple | None = None  # count_zero_hits under meSimp: (k, width, cell positions) at the start
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

    @property
    def wants_cells(self) -> bool:
        return self.track_stats or bool(self.records)

    def _plan(self) -> _Plan:
        check_rescale(self.rescale, self.mode)
        return _Plan(self.k_effective, self.mode, self.rescale, self.sparsify_bias, self.count_zero_hits,
                     self.compact_threshold, fused_applies(self.kernel, self.k_effective, self.weight_hh))

    def _observe(self, cells, sel, n_tok, touched, macs_done, macs_dense) -> None:
        """Backward's report: cells (N, h) bool per-token cell hits (None if not wanted)."""
        per_cell = cells.sum(0) if cells is not None else None
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
            if per_cell is not None:
                s.counts += per_cell.to(s.counts.dtype)
        for rec in self.records:
            rec.seen += n_tok
            rec.hits += per_cell.to(rec.hits.dtype)

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
            return _forward_core(xp, self.weight_ih, self.weight_hh, bias, batch_sizes)[2]
        return MePropLSTMFunction.apply(xp, *params, batch_sizes, self._plan(), self)

    # ------------------------------------------------------------------ meSimp actions

    def keep_cells(self, idx: torch.Tensor, optimizer=None) -> None:
        """Physically keep only cells ``idx`` (sorted): rows j, h+j, 2h+j, 3h+j of every
        gate parameter and column j of weight_hh; optimizer state sliced along."""
        h = self.hidden_size
        rows = torch.cat([idx + g * h for g in range(4)])
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if getattr(self, name) is not None:
                _slice_param(self, name, rows, 0, optimizer)
        _slice_param(self, "weight_hh", idx, 1, optimizer)
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


class LSTMSimplifier:
    """meSimp for LSTM directions feeding one next layer (a BiLSTM tagger's output layer).

    Args:
        lstms: the ``MePropLSTM`` directions, in the order their outputs are concatenated
            before ``next_layer`` (forward, backward).
        next_layer: a module with ``weight`` (out, sum of widths), e.g. ``nn.Linear``.
        prune_rate, realisation, record, count_zero_hits, min_units: as ``mesimp.Simplifier``.
            The LSTM record counts per token (see the module docstring); ``record`` is
            accepted for symmetry and checked, and unified-mode layers are recorded with
            the cells of the batch's selected set that had a non-zero gradient per token.

    ``prune(optimizer)`` prunes every direction on its own and returns the event;
    ``widths`` are the cells alive per direction; ``unit_ids[d]`` the original cell numbers.
    """

    def __init__(self, lstms, next_layer: nn.Module, prune_rate: float = 0.1, realisation: str = "physical",
                 record: str = "per_example", count_zero_hits: bool = False, min_units: int = 1):
        self.prune_rate, self.min_units = check_simplifier_args(prune_rate, realisation, record, count_zero_hits,
                                                                min_units)
        self.lstms = list(lstms)
        for layer in self.lstms:
            if not isinstance(layer, MePropLSTM):
                raise ValueError(f"LSTMSimplifier needs MePropLSTM layers, got {type(layer).__name__}")
        total = sum(l.hidden_size for l in self.lstms)
        if next_layer.weight.shape[1] != total:
            raise ValueError(f"next_layer has {next_layer.weight.shape[1]} input columns, the LSTMs give {total}")
        self.next_layer = next_layer
        self.realisation = realisation
        dev = self.lstms[0].weight_hh.device
        self.records = [ActivityRecord(l.hidden_size, record, False, dev) for l in self.lstms]
        for layer, rec in zip(self.lstms, self.records):
            layer.count_zero_hits = count_zero_hits
            layer.heap_origin = (layer.k_effective, layer.hidden_size, None)
            layer.records.append(rec)
        self.unit_ids = [torch.arange(l.hidden_size, device=dev) for l in self.lstms]
        self.alive = [torch.ones(l.hidden_size, dtype=torch.bool, device=dev) for l in self.lstms]
        self.events: list[dict] = []

    @property
    def widths(self) -> list[int]:
        return [int(a.sum()) for a in self.alive]

    def detach(self) -> None:
        for layer, rec in zip(self.lstms, self.records):
            if rec in layer.records:
                layer.records.remove(rec)

    def _offset(self, d: int) -> int:
        return sum(l.hidden_size for l in self.lstms[:d])

    def prune(self, optimizer=None) -> dict:
        event = {"widths_before": self.widths, "removed": [], "threshold": [], "seen": [], "kept_minimum": []}
        for d, (layer, rec) in enumerate(zip(self.lstms, self.records)):
            alive = self.alive[d] if self.realisation == "mask" else None
            keep, held = rec.keep_mask(self.prune_rate, self.min_units, alive)
            event["threshold"].append(rec.threshold(self.prune_rate))
            event["seen"].append(rec.seen)
            event["kept_minimum"].append(held)
            off = self._offset(d)
            if self.realisation == "physical":
                removed = int((~keep).sum())
                if removed:
                    idx = keep.nonzero().squeeze(1)
                    width = layer.hidden_size
                    layer.keep_cells(idx, optimizer)
                    cols = torch.cat([torch.arange(off, device=idx.device), off + idx,
                                      torch.arange(off + width, self.next_layer.weight.shape[1], device=idx.device)])
                    _slice_param(self.next_layer, "weight", cols, 1, optimizer)
                    self.unit_ids[d] = self.unit_ids[d][idx]
                    self.alive[d] = torch.ones(idx.numel(), dtype=torch.bool, device=idx.device)
                    rec.hits = rec.hits[idx]
                    layer.heap_origin = (*layer.heap_origin[:2], self.unit_ids[d])
            else:
                newly = self.alive[d] & ~keep
                removed = int(newly.sum())
                self.alive[d] = keep.clone()
                if removed:
                    self._remove_masked(layer, newly.nonzero().squeeze(1), off, optimizer, keep)
            event["removed"].append(removed)
            rec.clear()
        event["widths"] = self.widths
        self.events.append(event)
        return event

    def _remove_masked(self, layer: MePropLSTM, cells: torch.Tensor, off: int, optimizer, alive) -> None:
        h = layer.hidden_size
        rows = torch.cat([cells + g * h for g in range(4)])
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            p = getattr(layer, name)
            if p is not None:
                _zero_state(p, rows, 0, optimizer)
        _zero_state(layer.weight_hh, cells, 1, optimizer)
        _zero_state(self.next_layer.weight, off + cells, 1, optimizer)
        layer.cell_mask = alive.to(layer.weight_hh.dtype)

    def __repr__(self) -> str:
        return (f"LSTMSimplifier(prune_rate={self.prune_rate}, realisation={self.realisation}, "
                f"widths={self.widths}, prunes={len(self.events)})")


def _zero_state(param: nn.Parameter, index: torch.Tensor, dim: int, optimizer) -> None:
    """Hold ``index`` along ``dim`` of ``param`` at zero, with its optimizer state."""
    with torch.no_grad():
        param.data.index_fill_(dim, index, 0.0)
    if optimizer is None:
        return
    for key, v in optimizer.state.get(param, {}).items():
        if key != "step" and torch.is_tensor(v) and v.shape == param.shape:
            v.index_fill_(dim, index, 0.0)


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
        offs = torch.arange(0, 4 * hsz, hsz, device=dG.device).view(1, 4, 1)
        sel = _select_kept(dG.contiguous(), hsz, _Plan(kk, mode, False, False, False, 0.5), offs)[0]  # (B, 4k)
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
