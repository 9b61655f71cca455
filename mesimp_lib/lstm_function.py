"""The LSTM's autograd Function: packed forward, per-gate top-k back propagation through time.

Taught in notebooks/07_lstm_pos_tagging.ipynb (the method: ``mesimp_lib/lstm.py``'s docstring).

Forward runs the packed time-major batch step by step (``forward_core``). Backward has three parts:
    ``bptt``          the recurrence backwards in time: dG_t, the gate pre-activation gradient of every
                      token (dense, the bias gradient and the selection's input), and per step the
                      per-gate top-k of dG_t that carries dh_{t-1} through the 4k selected rows of W_hh
    ``dense_grads`` / ``sparse_grads``   dx, dW_ih, dW_hh from dG (dense) or from the selected entries
                      (``embedding_bag`` / GEMMs over the union of selected rows / the fused kernel)
    ``CellHits``      which memory cells each token selected (the LSTM's hit rule), for the layer's stats
                      and the meSimp records, computed once per rule that asks for it
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .meprop import _fused
from .selection import hit_mask

__all__ = ["CellHits", "LSTMPlan", "MePropLSTMFunction", "forward_core", "pack_index", "select_kept"]


@dataclass(frozen=True)
class LSTMPlan:
    """Everything backward needs to know, fixed for one forward pass."""

    k: int | None
    mode: str
    rescale: bool
    sparsify_bias: bool
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


# --------------------------------------------------------------------------- forward


def forward_core(x, w_ih, w_hh, bias, batch_sizes):
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


# --------------------------------------------------------------------------- selection and hits


def select_kept(u: torch.Tensor, h: int, plan: LSTMPlan):
    """Per-gate selection on dG (n, 4h) -> gate rows (n, 4k) and the kept values (n, 4k)."""
    n = u.shape[0]
    v = u.view(n, 4, h)
    if plan.mode == "per_example":
        idx = v.abs().topk(plan.k, dim=2, sorted=False).indices  # (n, 4, k)
    elif plan.mode == "unified":
        idx = v.abs().sum(0).topk(plan.k, dim=1, sorted=False).indices.unsqueeze(0).expand(n, -1, -1)
    else:  # random
        idx = torch.rand(v.shape, device=u.device).topk(plan.k, dim=2, sorted=False).indices
    offs = torch.arange(0, 4 * h, h, device=u.device).view(1, 4, 1)
    sel = (idx + offs).view(n, 4 * plan.k)
    kept = u.gather(1, sel)
    if plan.rescale:
        kept = kept * (h / plan.k)
    return sel, kept


class CellHits:
    """Which memory cells each token of one backward selected: ``cells(...)`` -> bool (N, h).

    A token hits cell j when its selection (the four gates merged) holds a row j, h+j, 2h+j or 3h+j with a
    non-zero gradient (any gradient with ``count_zero_hits``). With ``count_zero_hits`` in per-example mode
    (and in a dense backward) each gate's top-k is selected as the authors' C# heap selects
    (``selection.hit_mask`` with the heap; the C# has no LSTM, so this is the MLP's rule applied per gate) with the
    heap's k over the ``width`` original cells, the current ones at ``positions`` (None: all), so that the
    mask and physical realisations of meSimp count alike; with no k (dense) every cell is hit.
    Each distinct rule is computed once per backward (the stats and a record usually share one).
    """

    def __init__(self, dG: torch.Tensor, sel: torch.Tensor | None, mode: str):
        self.dG, self.sel, self.mode = dG, sel, mode  # sel None: a dense backward
        self._memo: dict = {}

    def cells(self, count_zero_hits: bool, k: int | None, width: int, positions: torch.Tensor | None = None):
        key = (count_zero_hits, k, width, None if positions is None else id(positions))
        if key not in self._memo:
            self._memo[key] = self._cells(count_zero_hits, k, width, positions)
        return self._memo[key]

    def _cells(self, count_zero_hits, k, width, positions) -> torch.Tensor:
        n, h = self.dG.shape[0], self.dG.shape[1] // 4
        if count_zero_hits and k is not None and (self.sel is None or self.mode == "per_example"):
            per_gate = hit_mask(self.dG.reshape(n * 4, h), None, True, heap=(k, width, positions))  # (4N, h)
            return per_gate.view(n, 4, h).any(1)
        return hit_mask(self.dG, self.sel, count_zero_hits).view(n, 4, h).any(1)  # (N, h)


# --------------------------------------------------------------------------- backward parts


def bptt(dH, G, C, w_hh, batch_sizes, plan: LSTMPlan, mask, prev):
    """The recurrence backwards in time. Returns dG (N, 4h) dense and, for a top-k plan, the selection
    (N, 4k) gate rows and kept values in packed (time) order (None, None for a dense plan).

    Everything that does not depend on the recurrence is computed for all tokens at once:
        dG[:, i|f|g] = dc_t * P,  P = [g * i(1-i), c_{t-1} * f(1-f), i * (1-g^2)]
        dG[:, o]     = dh_t * Q,  Q = tanh(c_t) * o(1-o)
        dc_t         = dh_t * ODT + dc_{t+1} * f_{t+1},  ODT = o * (1 - tanh(c_t)^2)
    """
    h = w_hh.shape[1]
    n_tok, bs, dense = G.shape[0], batch_sizes, plan.k is None
    n0 = bs[0] if bs else 0
    i_, f_, g_, o_ = G[:, :h], G[:, h:2 * h], G[:, 2 * h:3 * h], G[:, 3 * h:]
    TC = torch.tanh(C)  # (N, h)
    ODT = o_ * (1 - TC * TC)
    Q = TC * o_ * (1 - o_)
    c_prev = torch.zeros_like(C)
    c_prev[n0:] = C.index_select(0, prev)
    P = torch.stack([g_ * i_ * (1 - i_), c_prev * f_ * (1 - f_), i_ * (1 - g_ * g_)], dim=1)  # (N, 3, h)
    del c_prev

    dG = G.new_empty(n_tok, 4 * h)  # (N, 4h) dense dL/dG (the bias gradient; the selection's input)
    offsets = list(itertools.accumulate(bs, initial=0))
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
        sel, kept = select_kept(u, h, plan)  # (n, 4k) gate rows and their values
        idx_steps.append(sel)
        kept_steps.append(kept)
        # dh_{t-1}: per example the sum of the 4k selected rows of W_hh, weighted
        if plan.mode == "unified":  # one row set for the batch: a small dense product
            dh_carry = kept @ w_hh.index_select(0, sel[0])  # (n, 4k) @ (4k, h)
        else:
            dh_carry = F.embedding_bag(sel, w_hh, per_sample_weights=kept, mode="sum")  # (n, h)
    if dense or not bs:
        return dG, None, None
    sel, kept = select_kept(dG[:n0], h, plan)  # step 0
    idx_steps.append(sel)
    kept_steps.append(kept)
    return dG, torch.cat(idx_steps[::-1]), torch.cat(kept_steps[::-1])


def dense_grads(dG, x, w_ih, H, prev, n0, need):
    """dx, dW_ih, dW_hh of a dense BPTT. ``need`` = (x, w_ih, w_hh)."""
    grad_x = dG @ w_ih if need[0] else None
    g_wih = dG.t() @ x if need[1] else None
    g_whh = dG[n0:].t() @ H.index_select(0, prev) if need[2] else None
    return grad_x, g_wih, g_whh


def sparse_grads(sel, kept, union, x, w_ih, w_hh, H, prev, n0, plan: LSTMPlan, need):
    """dx, dW_ih, dW_hh from the selected entries (N, 4k), and how many rows of the [4h] gate weights each
    token's dW really took (4k fused; the union's size for the compact GEMMs; 4h for masked dense GEMMs)."""
    need_x, need_wih, need_whh = need
    h4, n_tok, in_f = w_ih.shape[0], x.shape[0], x.shape[1]
    grad_x = g_wih = g_whh = None
    if plan.fused:  # native per-example axpy's: 4k rows per token for dx, dW_ih, dW_hh
        kern = _fused()
        if need_x or need_wih:
            g_wih = x.new_zeros(h4, in_f) if need_wih else None
            dx, _ = kern.per_example_backward(kept, sel, x.contiguous(), w_ih.contiguous(),
                                              g_wih if need_wih else x.new_empty(0), need_x, need_wih)
            grad_x = dx if need_x else None
        if need_whh:
            g_whh = x.new_zeros(h4, w_hh.shape[1])
            kern.per_example_backward(kept[n0:].contiguous(), sel[n0:].contiguous(), H.index_select(0, prev),
                                      w_hh.contiguous(), g_whh, False, True)
        return grad_x, g_wih, g_whh, 4 * plan.k
    if need_x:
        grad_x = F.embedding_bag(sel, w_ih, per_sample_weights=kept, mode="sum")  # (N, in)
    if not (need_wih or need_whh):
        return grad_x, g_wih, g_whh, 0
    if union.numel() <= plan.compact_threshold * h4:  # GEMMs over the union's rows only
        gu = x.new_zeros(n_tok, union.numel()).scatter_(1, torch.searchsorted(union, sel), kept)  # (N, |U|)
        if need_wih:
            g_wih = x.new_zeros(h4, in_f).index_copy_(0, union, gu.t() @ x)
        if need_whh:
            g_whh = x.new_zeros(h4, w_hh.shape[1]).index_copy_(0, union, gu[n0:].t() @ H.index_select(0, prev))
        return grad_x, g_wih, g_whh, min(union.numel(), h4)
    gm = x.new_zeros(n_tok, h4).scatter_(1, sel, kept)  # masked dense GEMMs
    if need_wih:
        g_wih = gm.t() @ x
    if need_whh:
        g_whh = gm[n0:].t() @ H.index_select(0, prev)
    return grad_x, g_wih, g_whh, h4


# --------------------------------------------------------------------------- the Function


class MePropLSTMFunction(torch.autograd.Function):
    """Packed one-direction LSTM with per-gate top-k BPTT. x is (N, in) packed time-major. ``layer`` (the
    ``MePropLSTM`` or None) gives the meSimp mask (``cell_mask``) and receives backward's report."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, batch_sizes, plan, layer):
        bias = None
        if b_ih is not None:
            bias = b_ih + b_hh if b_hh is not None else b_ih
        elif b_hh is not None:
            bias = b_hh
        G, C, H = forward_core(x, w_ih, w_hh, bias, batch_sizes)
        ctx.save_for_backward(x, w_ih, w_hh, G, C, H)
        ctx.batch_sizes, ctx.plan, ctx.layer = batch_sizes, plan, layer
        return H

    @staticmethod
    @once_differentiable
    def backward(ctx, dH):
        x, w_ih, w_hh, G, C, H = ctx.saved_tensors
        bs, plan, layer = ctx.batch_sizes, ctx.plan, ctx.layer
        need_x, need_wih, need_whh, need_bih, need_bhh = ctx.needs_input_grad[:5]
        need = (need_x, need_wih, need_whh)
        h, (n_tok, in_f) = w_hh.shape[1], x.shape
        mask = None
        if layer is not None and layer.cell_mask is not None:  # meSimp mask realisation
            mask = layer.cell_mask.to(x.dtype).repeat(4)  # (4h,)
        n0 = bs[0] if bs else 0
        prev = _prev_index(bs, x.device)  # packed row of h_{t-1} / c_{t-1}
        dG, sel, kept = bptt(dH.contiguous(), G, C, w_hh, bs, plan, mask, prev)

        g_b = dG.sum(0) if (need_bih or need_bhh) and (plan.k is None or not plan.sparsify_bias) else None
        macs_dense = 4 * h * ((n_tok - n0) * h * 2 + n_tok * in_f * (int(need_x) + int(need_wih)))
        if plan.k is None:
            grad_x, g_wih, g_whh = dense_grads(dG, x, w_ih, H, prev, n0, need)
            macs_done, touched = macs_dense, 4 * h
        else:
            union = torch.unique(sel)
            touched = union.numel()
            grad_x, g_wih, g_whh, computed = sparse_grads(sel, kept, union, x, w_ih, w_hh, H, prev, n0, plan, need)
            if (need_bih or need_bhh) and plan.sparsify_bias:
                g_b = x.new_zeros(4 * h).index_add_(0, sel.reshape(-1), kept.reshape(-1))
            macs_done = 4 * plan.k * ((n_tok - n0) * h + n_tok * in_f * int(need_x))
            macs_done += computed * (n_tok * in_f * int(need_wih) + (n_tok - n0) * h * int(need_whh))
        if layer is not None:
            layer._observe(CellHits(dG, sel, plan.mode), sel, n_tok, touched, macs_done, macs_dense)
        return (grad_x, g_wih, g_whh, g_b if need_bih else None, g_b if need_bhh else None, None, None, None)
