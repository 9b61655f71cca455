"""The backward of the meProp linear layer, one function per (selection, kernel) pair: the table ``BACKWARDS``.

Taught in notebook 01 (the step-through: dx = g_k W, dW = g_k^T x over the selected rows) and 09 (speed: the
pure-PyTorch reference and the compiled kernels of ``mesimp_lib.fused``, and when each applies).

    dense      k None: the ordinary backward (a narrow layer at a small batch: native loops)
    unified    one top-k set for the batch: two small dense products over the selected columns
    per example / random
               torch: products over the union of the selected columns (or the masked gradient past
               ``compact_threshold``); native: selection, dx, db, the record and dW in one C++ pass

Each returns a ``Grads``; ``weight_gradient`` turns it into the weight gradient autograd hands over: dense
``[out, in]`` or a coalesced row-sparse tensor of exactly the computed rows, in ascending order in every kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .selection import select_per_example, select_random, select_unified

__all__ = ["BACKWARDS", "NARROW_DENSE", "Grads", "fused_applies", "narrow_dense_applies", "weight_gradient"]

NO_ROWS = torch.empty(0, 0)  # "no tensor" for the native kernels' optional arguments


@dataclass
class Grads:
    """What one backward of the table computed. ``vals`` are the rows ``rows`` of dW (all rows if ``rows`` is
    None); ``grad_w`` a finished weight gradient a kernel wrote itself; ``idx`` the selection for the record
    and the observers; ``counted``: the kernel already added the record's counts."""

    grad_x: torch.Tensor | None = None
    grad_b: torch.Tensor | None = None
    vals: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    grad_w: torch.Tensor | None = None
    idx: object = None
    touched: int = 0
    computed: int = 0
    counted: bool = False


def _bias_sum(g, plan, idx: torch.Tensor) -> torch.Tensor:
    """db: every column of g, or (sparsify_bias) the selected columns ``idx`` only (unified)."""
    if not plan.sparsify_bias:
        return g.sum(0)
    return g.new_zeros(g.shape[1]).index_copy_(0, idx, g.index_select(1, idx).sum(0))


def _dense_torch(g, x, weight, plan, need, stats) -> Grads:
    """k None: the ordinary dense backward."""
    need_x, need_w, need_b = need
    out = g.shape[1]
    return Grads(g @ weight if need_x else None, g.sum(0) if need_b else None, g.t() @ x if need_w else None,
                  touched=out, computed=out)


def _dense_native(g, x, weight, plan, need, stats) -> Grads:
    """k None, a narrow layer: native loops at a small batch (C++'s rule)."""
    grad_x, vals, grad_b = _fused().dense_backward(g, x, weight, *need)
    out = g.shape[1]
    return Grads(grad_x, grad_b, vals if need[1] else None, touched=out, computed=out)


def _unified_torch(g, x, weight, plan, need, stats) -> Grads:
    """One top-k set for the batch: two small dense products over the selected columns."""
    need_x, need_w, need_b = need
    idx = select_unified(g, plan.k)  # (k,) in top-k order
    gk = g.index_select(1, idx)  # (N, k)
    vals, rows = gk.t() @ x if need_w else None, idx  # (k, in)
    if need_w and plan.weight_grad == "sparse":  # rows ascending, as the kernels': the sparse gradient is coalesced
        rows, order = idx.sort()
        vals = vals.index_select(0, order)
    return Grads(gk @ weight.index_select(0, idx) if need_x else None, _bias_sum(g, plan, idx) if need_b else None,
                  vals, rows, idx=idx, touched=plan.k, computed=plan.k)


def _unified_native(g, x, weight, plan, need, stats) -> Grads:
    """Unified in one native call (column sums, top-k and both products over the selected rows of W)."""
    need_x, need_w, need_b = need
    grad_x, idx, vals = _fused().unified_backward(g, x, weight, plan.k, need_x, need_w)
    return Grads(grad_x if need_x else None, _bias_sum(g, plan, idx) if need_b else None, vals if need_w else None,
                  idx, idx=idx, touched=plan.k, computed=plan.k)


def _topk_torch(g, x, weight, plan, need, stats) -> Grads:
    """Per example / random: products over the union of the selected columns when it is at most
    ``compact_threshold`` of the width, else over the masked gradient."""
    need_x, need_w, need_b = need
    n, out = g.shape
    idx = select_per_example(g, plan.k) if plan.mode == "per_example" else select_random(g, plan.k)
    kept = g.gather(1, idx)  # (N, k) the kept gradient entries
    if plan.rescale:
        kept = kept * (out / plan.k)
    union, pos = torch.unique(idx, return_inverse=True)  # rows of W that get a gradient
    r = Grads(idx=(idx, kept), touched=union.numel(), computed=union.numel())
    masked = r.touched > plan.compact_threshold * out
    if not masked:  # compaction: only the union's columns
        gs, w_rows = g.new_zeros(n, r.touched).scatter_(1, pos, kept), weight.index_select(0, union)  # (N, |U|)
    else:  # masked dense products
        gs, w_rows, r.computed = g.new_zeros(n, out).scatter_(1, idx, kept), weight, out  # (N, out)
    if need_x:
        r.grad_x = gs @ w_rows
    if need_w:
        r.vals, r.rows = gs.t() @ x, (None if masked else union)
        if masked and plan.weight_grad == "sparse":  # the selected rows only, as the compact path and the kernels
            r.vals, r.rows = r.vals.index_select(0, union), union
    if need_b and plan.sparsify_bias:
        r.grad_b = gs.sum(0) if masked else g.new_zeros(out).index_add_(0, union, gs.sum(0))
    elif need_b:
        r.grad_b = g.sum(0)
    return r


def _topk_native(g, x, weight, plan, need, stats) -> Grads:
    """Per example / random in one native pass: selection (top-k of every row in the kernel; random indices are
    drawn here), dx, db, the record and dW, B*k*in multiply-adds each for dx and dW, no (N, out) mask."""
    need_x, need_w, need_b = need
    out = g.shape[1]
    given = NO_ROWS if plan.mode == "per_example" else select_random(g, plan.k)
    scale = out / plan.k if plan.rescale else 1.0
    # the dense form: the kernel accumulates the rows straight into a zeroed [out, in] gradient
    dense_w = need_w and plan.weight_grad == "dense"
    target = torch.zeros_like(weight, memory_format=torch.contiguous_format) if dense_w else NO_ROWS
    counts = stats.counts if stats is not None else NO_ROWS
    grad_x, grad_b, sel, kept, rows, vals = _fused().topk_backward(
        g, x.contiguous(), weight.contiguous(), plan.k, given, scale, need_x, need_b, plan.sparsify_bias,
        target, need_w and not dense_w, counts, plan.count_zero_hits)
    return Grads(grad_x if need_x else None, grad_b if need_b else None,
                  vals if need_w and not dense_w else None, rows, target if dense_w else None, (sel, kept),
                  rows.numel(), plan.k, counted=True)


# the backward of each (selection, native kernels?) pair; "dense" = k None
BACKWARDS = {
    ("dense", False): _dense_torch,
    ("dense", True): _dense_native,
    ("unified", False): _unified_torch,
    ("unified", True): _unified_native,
    ("per_example", False): _topk_torch,
    ("per_example", True): _topk_native,
    ("random", False): _topk_torch,
    ("random", True): _topk_native,
}


def weight_gradient(r: Grads, plan, weight: torch.Tensor) -> torch.Tensor | None:
    """The weight gradient in the plan's form: dense ``[out, in]`` or row-sparse (exactly the rows computed)."""
    if r.grad_w is not None or r.vals is None:
        return r.grad_w
    if plan.weight_grad == "dense":
        return r.vals if r.rows is None else r.vals.new_zeros(weight.shape).index_copy_(0, r.rows, r.vals)
    rows = r.rows if r.rows is not None else torch.arange(weight.shape[0], device=r.vals.device)
    # rows ascending and unique (a sorted top-k set or a union) in every kernel: coalesced by construction
    return torch.sparse_coo_tensor(rows.unsqueeze(0), r.vals, weight.shape, check_invariants=False, is_coalesced=True)


def _fused():
    from .fused import kernels

    return kernels()


def _require_kernels(kernel: str):
    """The compiled kernels for a layer that asked for ``kernel`` explicitly, or a RuntimeError saying why not."""
    kern = _fused()
    if kern is None:
        from .fused import status

        raise RuntimeError(f"kernel={kernel!r} requested but the native kernels are unavailable: {status()}")
    return kern


def fused_applies(kernel: str, k_effective, weight: torch.Tensor) -> bool:
    """Whether a layer's meProp backward takes the fused native kernels: kernel "fused" or "auto", a k to keep,
    a CPU float32/float64 weight and kernels built here. kernel="fused" raises where they cannot apply; "auto"
    falls back to the pure-PyTorch path."""
    if kernel == "torch" or k_effective is None:
        return False
    if weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.float64):
        if kernel == "fused":
            raise ValueError("kernel='fused' needs a CPU float32/float64 layer")
        return False
    if kernel == "fused":
        _require_kernels(kernel)
        return True
    return _fused() is not None


NARROW_DENSE = 64  # a dense (k=None) layer this narrow (out <= 64) at batches this small has a native backward


def narrow_dense_applies(kernel: str, weight: torch.Tensor) -> bool:
    """Whether a dense (k=None) layer's backward may take the native ``narrow_dense_backward``: at most
    NARROW_DENSE outputs (three small BLAS calls cost more in fixed overheads than the sums), kernel "fused" or
    "native" (the same loops as the whole-network native node, so both paths give the same bits), a CPU
    float32/float64 weight and kernels built here. Backward then calls the C++ ``dense_backward``, which takes the
    loops when the batch is at most NARROW_DENSE too (beyond, BLAS is faster). Not for "auto": runs made with it
    keep their PyTorch dense output layer."""
    return (kernel in ("fused", "native") and weight.shape[0] <= NARROW_DENSE and weight.device.type == "cpu"
            and weight.dtype in (torch.float32, torch.float64) and _fused() is not None)
