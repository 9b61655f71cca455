"""meProp: top-k sparsified back propagation for a linear layer.

METHODS.md section 1. Forward is the ordinary ``y = x W^T + b``. In backward, given
``g = dL/dy`` (B, out), only k entries of ``g`` are kept (by magnitude, or at random) and

    dL/dx = g_k W          only the k selected rows of W take part
    dL/dW = g_k^T x        only the k selected rows of dW are non-zero
    dL/db = g              dense by default (``sparsify_bias=False``)

Selection modes
    per_example  top-k of every row of g separately (the paper, the authors' C#)
    unified      one top-k set for the whole batch, ranked by sum_b |g[b, j]|
                 (the authors' PyTorch ``linearUnified``); backward becomes two small
                 dense products, which is where wall-clock speed comes from
    random       k distinct uniform indices per example, no rescaling unless
                 ``rescale=True`` (then the kept entries are multiplied by out/k; the flag is
                 refused in the other modes, where it has no meaning)

Dense backward: ``k`` None, 0, or >= out (through the same code path).

How the weight gradient reaches the optimizer (``weight_grad``); both come back through autograd only,
so ``torch.autograd.grad``, tensor hooks, accumulation, ``zero_grad`` in both forms, ``functional_call``,
DistributedDataParallel and ``gradcheck`` behave as with ``nn.Linear``
    "dense"   (default) an ordinary dense ``[out, in]`` gradient (zero outside the selected rows); any
              optimizer takes it.
    "sparse"  a coalesced ``torch.sparse_coo_tensor`` holding exactly the selected rows (the union of the
              batch's selections), in every kernel; SGD, LazySGD, LazyAdam and SparseAdam take it (Adam does
              not). Refused under ``torch.distributed`` (DDP all-reduces dense buckets, it cannot carry a
              row-sparse gradient whose rows differ per process).
The former default "buffer" (a persistent gradient written into ``weight.grad`` as a side effect of
backward) was removed: it gave the same numbers as "dense" but was wrong under DDP, ``autograd.grad``,
``functional_call`` and in-place edits of ``.grad``. ``weight_grad="buffer"`` is refused with that reason;
stored configs that say "buffer" are read as "dense" (``TrainConfig``).

Under autocast (e.g. CPU bfloat16) the layer computes in its weight's dtype and returns the autocast dtype,
so its output and gradients have the dtypes ``nn.Linear``'s have.
"""

from __future__ import annotations

import functools
import logging
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .validate import ArgumentError, check_bool, check_choice, check_device, check_dtype, check_float, check_size

log = logging.getLogger(__name__)

__all__ = [
    "TopKWidth",
    "LayerHooks",
    "MODES",
    "WEIGHT_GRADS",
    "MePropLinear",
    "MePropStats",
    "meprop_linear",
    "resolve_k",
    "select_per_example",
    "select_random",
    "select_unified",
    "heap_fillers",
    "heap_hits",
    "heap_selected",
]

MODES = ("per_example", "unified", "random")
WEIGHT_GRADS = ("dense", "sparse")
KERNELS = ("torch", "fused", "auto", "native")
NATIVE_MODES = ("per_example", "random", "unified")
_NATIVE_MODE_CODES = {"per_example": 0, "random": 1, "unified": 2}  # the C++ functions' mode argument
NATIVE_WEIGHT_GRADS = ("sparse", "dense")


def resolve_k(k, width: int, name: str = "k") -> int | None:
    """The number of gradient entries kept per example for a layer of ``width`` outputs.

    Returns None for a dense backward. ``k`` may be None or 0 (dense), an int
    (count; ``k >= width`` is dense) or a float in (0, 1] (share of the width, rounded,
    never below 1).
    """
    allowed = (
        f"allowed: None or 0 (dense), an int count (>= {width} also means dense), "
        f"or a fraction of the width {width} in (0, 1]"
    )
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise ArgumentError(f"{name}={k!r} is not a number; {allowed}", name)
    if isinstance(k, numbers.Integral):
        k = int(k)
        if k < 0:
            raise ArgumentError(f"{name}={k} is negative; {allowed}", name)
        return None if k == 0 or k >= width else k
    k = float(k)
    if k == 0.0:
        return None
    if not 0.0 < k <= 1.0:
        raise ArgumentError(f"{name}={k} is a fraction outside (0, 1]; {allowed}", name)
    n = max(1, int(round(k * width)))
    return None if n >= width else n


# --------------------------------------------------------------------------- selection


def select_unified(g: torch.Tensor, k: int) -> torch.Tensor:
    """One index set for the whole batch: the k columns with the largest sum |g|. -> (k,)"""
    return g.abs().sum(0).topk(k, sorted=False).indices


def select_per_example(g: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest |g| entries of every row. -> (B, k)"""
    return g.abs().topk(k, dim=1, sorted=False).indices


def select_random(g: torch.Tensor, k: int) -> torch.Tensor:
    """k distinct uniform indices per row, drawn from torch's global RNG. -> (B, k)"""
    return torch.rand(g.shape, device=g.device).topk(k, dim=1, sorted=False).indices


def all_indices(n: int, width: int, mode: str, device=None) -> torch.Tensor:
    """The selection of a dense backward, which keeps every entry: (width,) unified, else (n, width)."""
    every = torch.arange(width, device=device)
    return every if mode == "unified" else every.expand(n, width)


@functools.lru_cache(maxsize=64)
def _preorder(k: int) -> tuple[int, ...]:
    """Positions 0..k-1 of an array-stored binary tree (children 2i+1, 2i+2) in preorder."""
    order, stack = [], [0]
    while stack:
        i = stack.pop()
        if i < k:
            order.append(i)
            stack += [2 * i + 2, 2 * i + 1]
    return tuple(order)


def heap_fillers(nonzero: torch.Tensor, k: int, width: int | None = None,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
    """The zero entries the authors' C# top-k heap keeps in rows with fewer than k non-zeros. -> bool like ``nonzero``

    The C# (``TopNHeap.GetAbsTop``) seeds a min-heap with positions 0..k-1, heapifies it (Floyd; a sift
    prefers the left child on ties) and lets a later entry replace the root only if strictly larger. In a
    row with fewer than k non-zeros every non-zero is kept and the other slots hold zeros of index < k.
    Which ones: with only "zero / non-zero" mattering, heapify and each replacement keep the zeros in an
    ancestor-closed tree whose preorder is the preorder of the zeros among positions 0..k-1 (children
    2i+1, 2i+2), and each of the m non-zeros at positions >= k evicts the next zero in that order. So the
    fillers are the zeros of positions < k after the first m in preorder (tested against a plain-Python
    copy of the heap in tests/test_meprop.py). Rows with >= k non-zeros have no fillers.

    Args:
        nonzero: bool (N, width): which entries of the gradient rows are non-zero.
        k: the heap's size (the C# k), 1 <= k <= width.
        width, positions: the columns of ``nonzero`` are ``positions`` of the layer's original ``width`` units
            (meSimp removed the others: they have no gradient, as under the C#'s mask); the heap runs over the
            original row and the fillers at ``positions`` are returned. Default: the columns are the whole row.
    """
    if positions is not None:
        full = nonzero.new_zeros(nonzero.shape[0], width)
        full[:, positions] = nonzero
        return heap_fillers(full, k)[:, positions]
    n, width = nonzero.shape
    if not 1 <= k <= width:
        raise ValueError(f"k={k} must be in [1, width={width}] for the heap's filler rule")
    low = nonzero[:, :k]
    m = nonzero[:, k:].sum(1, keepdim=True)  # non-zeros after the seed: each evicts one zero
    order = torch.tensor(_preorder(k), dtype=torch.long, device=nonzero.device)
    zeros = ~low[:, order]  # (N, k) in preorder
    keep = zeros & (zeros.cumsum(1) > m)
    out = torch.zeros_like(nonzero)
    out[:, order] = keep
    out[(nonzero.sum(1) >= k)] = False
    return out


def heap_selected(g: torch.Tensor, k: int, top: torch.Tensor | None = None, fill: torch.Tensor | None = None):
    """Which entries of the rows of ``g`` the authors' C# top-k heap selects. -> bool like ``g``

    A row with more than k non-zeros: its top-k (``top`` (N, k) if the caller selected it already). Any
    other row: all its non-zeros and the heap's zero fillers (``fill``, default ``heap_fillers(g != 0, k)``).
    Ties among equal non-zero magnitudes at the k-th place follow torch's top-k (or the native selection),
    not the C# heap's order.
    """
    nz = g != 0
    if fill is None:
        fill = heap_fillers(nz, k)
    many = nz.sum(1) > k  # these rows' top-k holds non-zeros only
    sel = (nz & ~many.unsqueeze(1)) | fill
    if bool(many.any()):
        top = top[many] if top is not None else select_per_example(g[many], k)
        sel[many] = sel[many].scatter(1, top, True)
    return sel


def heap_hits(g: torch.Tensor, k: int, top: torch.Tensor | None = None, fill: torch.Tensor | None = None):
    """Hits per unit as the authors' C# record counts them (``count_zero_hits``): ``heap_selected`` summed
    over the rows. -> (width,)"""
    return heap_selected(g, k, top, fill).sum(0)


# --------------------------------------------------------------------------- stats


class MePropStats:
    """What a meProp layer remembers for plots and widgets (updated in backward).

    counts[j]          examples whose selected set contained unit j (per example, also in
                       unified mode; entries whose gradient is exactly 0 are not counted
                       unless ``count_zero_hits``: then per-example top-k counts the zero
                       fillers of the authors' C# heap, ``heap_hits``, and random / unified
                       selection every selected entry)
    last_indices       the indices kept in the last backward: (B, k) per example / random,
                       (k,) unified; a dense backward (k None, 0 or >= width) keeps every
                       entry: (B, width) per example / random, (width,) unified; None before
                       the first backward. ``counts`` records top-k / random selections only.
    rows_touched       rows of W that received a non-zero-able gradient, last step and sum
    macs_done / dense  backward multiply-adds really performed vs a dense backward
    """

    def __init__(self, width: int, device=None):
        self.reset(width, device)

    def reset(self, width: int | None = None, device=None) -> None:
        width = self.width if width is None else width
        device = self.counts.device if device is None and hasattr(self, "counts") else device
        self.width = width
        self.counts = torch.zeros(width, dtype=torch.int64, device=device)
        self.backward_calls = 0
        self.examples = 0
        self.last_indices: torch.Tensor | None = None
        self.last_rows_touched = 0
        self.rows_touched_total = 0
        self.macs_done = 0
        self.macs_dense = 0

    @property
    def mean_rows_touched_frac(self) -> float:
        """Average share of W's rows with a gradient per backward call."""
        if self.backward_calls == 0:
            return 0.0
        return self.rows_touched_total / (self.backward_calls * self.width)

    @property
    def macs_ratio(self) -> float:
        """Multiply-adds done / multiply-adds of a dense backward (1.0 = dense)."""
        return self.macs_done / self.macs_dense if self.macs_dense else 1.0

    def __repr__(self) -> str:
        return (
            f"MePropStats(width={self.width}, backward_calls={self.backward_calls}, "
            f"examples={self.examples}, rows_touched={self.mean_rows_touched_frac:.3f}, "
            f"macs_ratio={self.macs_ratio:.3f})"
        )


class _NativeCounter:
    """A ``MePropStats`` counter that adds what the native layer accumulated into ``stats._native``."""

    def __init__(self, slot: int, last: bool = False):
        self.slot, self.last = slot, last

    def __set_name__(self, owner, name):
        self.key = "_py_" + name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        v = obj.__dict__.get(self.key, 0)
        nat = obj.__dict__.get("_native")
        if nat is None:
            return v
        if self.last:  # the value of the last backward: the native one if the native path recorded last
            return int(nat[self.slot]) if int(nat[6]) else v
        return v + int(nat[self.slot])

    def __set__(self, obj, value):
        nat = obj.__dict__.get("_native")
        if nat is not None and self.last:
            nat[6] = 0  # the Python path records this step
            obj.__dict__[self.key] = value
        else:
            obj.__dict__[self.key] = value - (0 if nat is None else int(nat[self.slot]))


class NativeMePropStats(MePropStats):
    """``MePropStats`` of a ``kernel="native"`` layer: the C++ backward adds its record to ``counts`` and to the
    int64 tensor ``_native`` = [backward_calls, examples, last_rows_touched, rows_touched_total, macs_done,
    macs_dense, who recorded last (0 Python, 1 native)] and points ``_native_last`` at the
    last indices, so no Python runs per step; the attributes read the same as ``MePropStats``'s."""

    backward_calls = _NativeCounter(0)
    examples = _NativeCounter(1)
    last_rows_touched = _NativeCounter(2, last=True)
    rows_touched_total = _NativeCounter(3)
    macs_done = _NativeCounter(4)
    macs_dense = _NativeCounter(5)

    def reset(self, width: int | None = None, device=None) -> None:
        self.__dict__["_native"] = torch.zeros(7, dtype=torch.int64)
        self._native_last = torch.empty(0, dtype=torch.int64)
        super().reset(width, device)

    @property
    def last_indices(self) -> torch.Tensor | None:
        nat = self.__dict__.get("_native")
        who = int(nat[6]) if nat is not None else 0
        return self._native_last if who == 1 else self.__dict__.get("_py_last_indices")

    @last_indices.setter
    def last_indices(self, value) -> None:
        nat = self.__dict__.get("_native")
        if nat is not None:
            nat[6] = 0
        self.__dict__["_py_last_indices"] = value

    @classmethod
    def from_stats(cls, stats: MePropStats) -> "NativeMePropStats":
        """A native record continuing ``stats`` (same counts tensor and totals)."""
        new = cls(stats.width, stats.counts.device)
        new.counts = stats.counts
        for name in ("backward_calls", "examples", "last_rows_touched", "rows_touched_total", "macs_done",
                     "macs_dense", "last_indices"):
            setattr(new, name, getattr(stats, name))
        return new


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class _Plan:
    """Everything backward needs to know, fixed for one forward pass."""

    k: int | None
    mode: str
    rescale: bool
    sparsify_bias: bool
    weight_grad: str
    count_zero_hits: bool
    compact_threshold: float
    fused: bool = False  # use the native kernels of mesimp_lib.fused


class LayerHooks:
    """Extension points read in backward (meSimp uses them; meProp itself does not).

    grad_mask   bool/float ``(out,)``: multiplies ``g`` before selection (removed units get
                no gradient and are never selected)
    observers   objects with ``observe(g, selection, plan)``, called after selection with
                ``selection`` = None (dense), ``(k,)`` indices (unified) or a tuple
                ``(indices (N, k), kept values (N, k))`` (per example / random)
    """

    def __init__(self):
        self.grad_mask: torch.Tensor | None = None
        self.observers: list = []

    def __bool__(self) -> bool:
        return self.grad_mask is not None or bool(self.observers)


# --------------------------------------------------------------------------- autograd


@dataclass
class _Grads:
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


def _bias_sum(g, plan: _Plan, idx: torch.Tensor) -> torch.Tensor:
    """db: every column of g, or (sparsify_bias) the selected columns ``idx`` only (unified)."""
    if not plan.sparsify_bias:
        return g.sum(0)
    return g.new_zeros(g.shape[1]).index_copy_(0, idx, g.index_select(1, idx).sum(0))


def _dense_torch(g, x, weight, plan, need, stats) -> _Grads:
    """k None: the ordinary dense backward."""
    need_x, need_w, need_b = need
    out = g.shape[1]
    return _Grads(g @ weight if need_x else None, g.sum(0) if need_b else None, g.t() @ x if need_w else None,
                  touched=out, computed=out)


def _dense_native(g, x, weight, plan, need, stats) -> _Grads:
    """k None, a narrow layer: native loops at a small batch (C++'s rule)."""
    grad_x, vals, grad_b = _fused().dense_backward(g, x, weight, *need)
    out = g.shape[1]
    return _Grads(grad_x, grad_b, vals if need[1] else None, touched=out, computed=out)


def _unified_torch(g, x, weight, plan, need, stats) -> _Grads:
    """One top-k set for the batch: two small dense products over the selected columns."""
    need_x, need_w, need_b = need
    idx = select_unified(g, plan.k)  # (k,) in top-k order
    gk = g.index_select(1, idx)  # (N, k)
    vals, rows = gk.t() @ x if need_w else None, idx  # (k, in)
    if need_w and plan.weight_grad == "sparse":  # rows ascending, as the kernels': the sparse gradient is coalesced
        rows, order = idx.sort()
        vals = vals.index_select(0, order)
    return _Grads(gk @ weight.index_select(0, idx) if need_x else None, _bias_sum(g, plan, idx) if need_b else None,
                  vals, rows, idx=idx, touched=plan.k, computed=plan.k)


def _unified_native(g, x, weight, plan, need, stats) -> _Grads:
    """Unified in one native call (column sums, top-k and both products over the selected rows of W)."""
    need_x, need_w, need_b = need
    grad_x, idx, vals = _fused().unified_backward(g, x, weight, plan.k, need_x, need_w)
    return _Grads(grad_x if need_x else None, _bias_sum(g, plan, idx) if need_b else None, vals if need_w else None,
                  idx, idx=idx, touched=plan.k, computed=plan.k)


def _topk_torch(g, x, weight, plan, need, stats) -> _Grads:
    """Per example / random: products over the union of the selected columns when it is at most
    ``compact_threshold`` of the width, else over the masked gradient."""
    need_x, need_w, need_b = need
    n, out = g.shape
    idx = select_per_example(g, plan.k) if plan.mode == "per_example" else select_random(g, plan.k)
    kept = g.gather(1, idx)  # (N, k) the kept gradient entries
    if plan.rescale:
        kept = kept * (out / plan.k)
    union, pos = torch.unique(idx, return_inverse=True)  # rows of W that get a gradient
    r = _Grads(idx=(idx, kept), touched=union.numel(), computed=union.numel())
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


def _topk_native(g, x, weight, plan, need, stats) -> _Grads:
    """Per example / random in one native pass: selection (top-k of every row in the kernel; random indices are
    drawn here), dx, db, the record and dW, B*k*in multiply-adds each for dx and dW, no (N, out) mask."""
    need_x, need_w, need_b = need
    out = g.shape[1]
    given = _NO_ROWS if plan.mode == "per_example" else select_random(g, plan.k)
    scale = out / plan.k if plan.rescale else 1.0
    # the dense form: the kernel accumulates the rows straight into a zeroed [out, in] gradient
    dense_w = need_w and plan.weight_grad == "dense"
    target = torch.zeros_like(weight, memory_format=torch.contiguous_format) if dense_w else _NO_ROWS
    counts = stats.counts if stats is not None else _NO_ROWS
    grad_x, grad_b, sel, kept, rows, vals = _fused().topk_backward(
        g, x.contiguous(), weight.contiguous(), plan.k, given, scale, need_x, need_b, plan.sparsify_bias,
        target, need_w and not dense_w, counts, plan.count_zero_hits)
    return _Grads(grad_x if need_x else None, grad_b if need_b else None,
                  vals if need_w and not dense_w else None, rows, target if dense_w else None, (sel, kept),
                  rows.numel(), plan.k, counted=True)


# the backward of each (selection, native kernels?) pair; "dense" = k None
_BACKWARDS = {
    ("dense", False): _dense_torch,
    ("dense", True): _dense_native,
    ("unified", False): _unified_torch,
    ("unified", True): _unified_native,
    ("per_example", False): _topk_torch,
    ("per_example", True): _topk_native,
    ("random", False): _topk_torch,
    ("random", True): _topk_native,
}


def _weight_grad(r: _Grads, plan: _Plan, weight: torch.Tensor) -> torch.Tensor | None:
    """The weight gradient in the plan's form: dense ``[out, in]`` or row-sparse (exactly the rows computed)."""
    if r.grad_w is not None or r.vals is None:
        return r.grad_w
    if plan.weight_grad == "dense":
        return r.vals if r.rows is None else r.vals.new_zeros(weight.shape).index_copy_(0, r.rows, r.vals)
    rows = r.rows if r.rows is not None else torch.arange(weight.shape[0], device=r.vals.device)
    # rows ascending and unique (a sorted top-k set or a union) in every kernel: coalesced by construction
    return torch.sparse_coo_tensor(rows.unsqueeze(0), r.vals, weight.shape, check_invariants=False, is_coalesced=True)


class MePropLinearFunction(torch.autograd.Function):
    """``y = x W^T + b`` with a top-k sparsified backward (one function of ``_BACKWARDS`` per selection and
    kernel). x is (N, in)."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan: _Plan, stats, hooks=None):
        ctx.save_for_backward(x, weight)
        ctx.plan, ctx.stats, ctx.hooks = plan, stats, hooks
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        plan, stats, hooks = ctx.plan, ctx.stats, ctx.hooks
        need = tuple(ctx.needs_input_grad[:3])
        g = g.contiguous()
        if hooks is not None and hooks.grad_mask is not None:
            g = g * hooks.grad_mask  # removed units (meSimp mask realisation) get no gradient
        r = _BACKWARDS["dense" if plan.k is None else plan.mode, plan.fused](g, x, weight, plan, need, stats)
        if stats is not None:
            _record(stats, g, r.idx, plan, g.shape[0], g.shape[1], x.shape[1], r.touched, r.computed, need[0],
                    need[1], counted=r.counted)
        if hooks is not None:
            for observer in hooks.observers:
                observer.observe(g, r.idx, plan)
        return r.grad_x, _weight_grad(r, plan, weight), r.grad_b, None, None, None


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


_NO_ROWS = torch.empty(0, 0)  # "no tensor" for the native kernels' optional arguments


def _record(stats: MePropStats, g, idx, plan: _Plan, n, out, in_f, touched, computed, need_x, need_w,
            counted: bool = False) -> None:
    stats.backward_calls += 1
    stats.examples += n
    stats.last_indices = idx if not isinstance(idx, tuple) else idx[0]
    if idx is None:  # dense: every entry is kept
        stats.last_indices = all_indices(n, out, plan.mode, g.device)
    stats.last_rows_touched = touched
    stats.rows_touched_total += touched
    stats.macs_dense += n * out * in_f * (int(need_x) + int(need_w))
    stats.macs_done += n * computed * in_f * (int(need_x) + int(need_w))
    if idx is None or counted:
        return
    if isinstance(idx, tuple):  # per example / random: (indices (N, k), kept values (N, k))
        idx, kept = idx
        stats.last_indices = idx
        if plan.count_zero_hits and plan.mode == "per_example":  # the C# heap's record (heap_hits)
            stats.counts += heap_hits(g, plan.k, idx).to(stats.counts.dtype)
            return
        flat = idx.reshape(-1)
        if not plan.count_zero_hits:
            flat = flat[kept.reshape(-1) != 0]
        stats.counts.index_add_(0, flat, torch.ones_like(flat, dtype=stats.counts.dtype))
    else:  # unified: every example "selected" the batch's k units
        hit = g.index_select(1, idx) != 0 if not plan.count_zero_hits else None
        add = hit.sum(0) if hit is not None else torch.full_like(idx, n)
        stats.counts.index_add_(0, idx, add.to(stats.counts.dtype))


def meprop_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    k=None,
    mode: str = "per_example",
    *,
    rescale: bool = False,
    sparsify_bias: bool = False,
    weight_grad: str = "dense",
) -> torch.Tensor:
    """Functional meProp linear map (no stats; ``weight_grad="dense"`` by default so it
    composes with every autograd feature). Shapes as ``F.linear``."""
    _check_mode(mode)
    _check_weight_grad(weight_grad)
    check_rescale(rescale, mode)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"input has {x.shape[-1]} features in its last dimension, the weight expects {weight.shape[1]}")
    if weight_grad == "sparse":
        refuse_distributed("weight_grad='sparse'")
    cast = autocast_dtype(x.device.type)
    if cast is not None:  # as MePropLinear: compute in the weight's dtype, return the autocast dtype
        with torch.autocast(x.device.type, enabled=False):
            return meprop_linear(x.to(weight.dtype), weight, bias, k, mode, rescale=rescale,
                                 sparsify_bias=sparsify_bias, weight_grad=weight_grad).to(cast)
    plan = _Plan(resolve_k(k, weight.shape[0]), mode, rescale, sparsify_bias, weight_grad, False, 0.5)
    y = MePropLinearFunction.apply(x.reshape(-1, x.shape[-1]), weight, bias, plan, None)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def autocast_dtype(device_type: str):
    """The dtype autocast casts to on ``device_type`` while it is enabled there, else None. meProp layers then
    compute in their weights' dtype (the native kernels and the sparse backward keep full precision) and return
    this dtype, as ``nn.Linear``'s output under autocast."""
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def refuse_distributed(what: str) -> None:
    """A ValueError naming ``what`` when torch.distributed runs more than one process (DDP)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise ValueError(
            f"{what} is refused under torch.distributed (world size {dist.get_world_size()}): "
            "DistributedDataParallel all-reduces dense gradient buckets after backward, so a row-sparse weight "
            "gradient whose rows differ per process, or an optimizer step taken inside backward, would leave "
            "the replicas different; use weight_grad='dense' (the default) and a step after backward")


def _check_mode(mode: str) -> None:
    check_choice("mode", mode, MODES)


def check_layer_flags(compact_threshold, device, dtype, **flags) -> None:
    """The constructor arguments a meProp linear layer and LSTM share: ``compact_threshold`` in [0, 1],
    ``device`` / ``dtype`` (None or valid) and the bool ``flags`` (rescale, sparsify_bias, ...)."""
    check_float("compact_threshold", compact_threshold, 0.0, 1.0)
    check_device("device", device, optional=True)
    check_dtype("dtype", dtype)
    for name, value in flags.items():
        check_bool(name, value)


def check_rescale(rescale: bool, mode: str) -> None:
    """``rescale`` means one thing everywhere: random-k's kept entries times width/k (an unbiased estimate of the
    gradient). Top-k (per example or unified) is not an estimate, so the flag is refused there."""
    if rescale and mode != "random":
        raise ValueError(f"rescale=True applies to mode='random' only (the k random entries times width/k, an "
                         f"unbiased estimate of the gradient), not to mode={mode!r}; use rescale=False")


def _check_native(mode: str, weight_grad: str) -> None:
    if mode not in NATIVE_MODES:
        raise ValueError(f"kernel='native' supports mode {' / '.join(NATIVE_MODES)}, not {mode!r}")
    if weight_grad not in NATIVE_WEIGHT_GRADS:
        raise ValueError(f"kernel='native' returns the weight gradient through autograd: weight_grad='sparse' "
                         f"(LazyAdam, LazySGD, SGD) or 'dense', not {weight_grad!r}")


def config_weight_grad(weight_grad, lazy: bool):
    """``weight_grad`` of a training config: None = "sparse" with a lazy optimizer (which finds the rows to update
    in the row-sparse gradient; a dense one would make it update every row) and "dense" otherwise; the removed
    "buffer" form of a stored config computed the same gradient numbers as "dense", so it is read as "dense"
    (and logged); anything else is returned as is (and validated by the caller)."""
    if weight_grad is None:
        return "sparse" if lazy else "dense"
    if weight_grad == "buffer":
        log.info("weight_grad='buffer' (removed) is read as 'dense', which computes the same gradients")
        return "dense"
    return weight_grad


def _check_weight_grad(weight_grad: str) -> None:
    if weight_grad == "buffer":
        raise ValueError("weight_grad='buffer' was removed: it wrote weight.grad as a side effect of backward, "
                         "which is wrong under DDP, torch.autograd.grad, functional_call and in-place edits of "
                         "weight.grad; use weight_grad='dense' (the default: the same gradient numbers, through "
                         "autograd) or 'sparse' (row-sparse, for SGD and the lazy optimizers)")
    check_choice("weight_grad", weight_grad, WEIGHT_GRADS)


# --------------------------------------------------------------------------- module


class TopKWidth:
    """``k`` as given (int, fraction or None; validated when set), ``k_effective`` (the resolved count, None =
    dense) and ``backprop_ratio`` (k / width) of a layer whose top-k picks from ``_topk_width`` entries (the
    output width of a linear layer, the hidden size of an LSTM gate)."""

    @property
    def _topk_width(self) -> int:
        raise NotImplementedError

    @property
    def k(self):
        """The k as given (int, fraction or None); ``k_effective`` is the resolved count."""
        return self._k

    @k.setter
    def k(self, value) -> None:
        resolve_k(value, self._topk_width)  # validate now, not in the middle of training
        self._k = value

    @property
    def k_effective(self) -> int | None:
        """Entries kept per example (per gate for an LSTM) at the current width (None = dense)."""
        return resolve_k(self._k, self._topk_width)

    @property
    def backprop_ratio(self) -> float:
        """k / width: the share of the gradient that is back-propagated."""
        k = self.k_effective
        return 1.0 if k is None else k / self._topk_width


class MePropLinear(TopKWidth, nn.Module):
    """A drop-in ``nn.Linear`` whose backward keeps only the top-k output gradients.

    ``weight`` is ``[out, in]`` and the state_dict has exactly ``weight`` and ``bias``, so
    it loads into and from ``nn.Linear``; with the same seed the initial weights equal
    ``nn.Linear``'s. ``in_features`` / ``out_features`` follow the weight's shape (meSimp
    shrinks it). Forward outside autograd (eval, ``torch.no_grad``) is plain ``F.linear``.

    Args:
        k: None or 0 = dense backward; an int count (>= out is dense); a float in (0, 1]
            = share of the width.
        mode: "per_example" | "unified" | "random".
        rescale: random mode only (refused in the others): multiply the kept entries by out/k.
        sparsify_bias: also sparsify the bias gradient (the originals keep it dense).
        weight_grad: "dense" (default) | "sparse" (see the module docstring; both through autograd).
        count_zero_hits: count selected entries whose gradient is exactly 0 in ``stats``
            (the authors' C# did; default False).
        compact_threshold: per-example / random: if the union of the batch's selected
            rows is at most this share of the width, the products run on the union's
            columns only; otherwise on the masked gradient (measured crossover).
        track_stats: keep ``self.stats`` (selection counts, rows touched, multiply-adds).
        kernel: "auto" (default: "fused" where the native kernels build and apply, CPU float32/64 with
            a k to keep; else the PyTorch backward, with one logged line saying why), "torch" (the readable
            pure-PyTorch reference; the stored results were made with it), "fused" (the native kernels of
            ``mesimp_lib.fused``, compiled on first use with a one-line notice: per example, B*k*in
            multiply-adds written straight into the gradient; unified, one native call; a dense layer of at
            most 64 outputs at a batch of at most 64: native loops, whose rounding differs from BLAS's; an
            error where they cannot apply), or "native"
            (opt-in: the whole layer, forward and backward, is one C++ autograd function around the fused
            kernel, so autograd never calls into Python for it; every mode, CPU float32/64,
            ``weight_grad="sparse"`` (for LazyAdam / LazySGD / SGD) or ``"dense"``; the same results as
            "fused"; the record is accumulated natively (``stats`` is a ``NativeMePropStats``). Layers with
            ``hooks`` (meSimp) take the fused Python path; a dense layer (k None) runs the dense backward in C++).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        k=None,
        mode: str = "per_example",
        bias: bool = True,
        *,
        rescale: bool = False,
        sparsify_bias: bool = False,
        weight_grad: str = "dense",
        count_zero_hits: bool = False,
        compact_threshold: float = 0.5,
        track_stats: bool = True,
        kernel: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        in_features, out_features = check_size("in_features", in_features), check_size("out_features", out_features)
        check_layer_flags(compact_threshold=compact_threshold, bias=bias, rescale=rescale, sparsify_bias=sparsify_bias,
                          count_zero_hits=count_zero_hits, track_stats=track_stats, device=device, dtype=dtype)
        _check_mode(mode)
        check_rescale(rescale, mode)  # at the boundary too (and again at every forward, if mode changes later)
        _check_weight_grad(weight_grad)
        check_choice("kernel", kernel, KERNELS)
        if kernel == "native":
            _check_native(mode, weight_grad)
        self.kernel = kernel
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.mode = mode
        self.rescale = rescale
        self.sparsify_bias = sparsify_bias
        self.weight_grad = weight_grad
        self.count_zero_hits = count_zero_hits
        self.compact_threshold = compact_threshold
        self.track_stats = track_stats
        self.k = k  # validated by the setter
        self.stats = (NativeMePropStats if kernel == "native" else MePropStats)(out_features, device=self.weight.device)
        self.hooks = LayerHooks()
        self.reset_parameters()

    # same initialisation as nn.Linear, so equal seeds give equal weights
    reset_parameters = nn.Linear.reset_parameters

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def _topk_width(self) -> int:
        return self.weight.shape[0]

    def _plan(self) -> _Plan:
        _check_weight_grad(self.weight_grad)  # attributes set after construction too
        check_rescale(self.rescale, self.mode)
        return _Plan(
            self.k_effective,
            self.mode,
            self.rescale,
            self.sparsify_bias,
            self.weight_grad,
            self.count_zero_hits,
            self.compact_threshold,
            fused_applies(self.kernel, self.k_effective, self.weight) if self.k_effective is not None
            else narrow_dense_applies(self.kernel, self.weight),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"input has {x.shape[-1]} features in its last dimension; this layer expects in_features={self.in_features}"
            )
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad)
        )
        cast = autocast_dtype(x.device.type)
        if cast is not None:  # compute in the weight's dtype, return the autocast dtype (as nn.Linear's output)
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(x.to(self.weight.dtype)).to(cast)
        if not needs_graph:
            return F.linear(x, self.weight, self.bias)
        if self.weight_grad == "sparse":
            refuse_distributed("weight_grad='sparse'")
        if self.kernel == "native" and not self.hooks:
            return self._native_forward(x)
        if self.stats.width != self.out_features or self.stats.counts.device != self.weight.device:
            self.stats.reset(self.out_features, self.weight.device)
        stats = self.stats if self.track_stats else None
        y = MePropLinearFunction.apply(
            x.reshape(-1, self.in_features),
            self.weight,
            self.bias,
            self._plan(),
            stats,
            self.hooks if self.hooks else None,
        )
        return y.reshape(*x.shape[:-1], self.out_features)

    def _native_args(self) -> tuple:
        """(k, mode code, scale, counts, acc, last) for the native functions; checks that this layer can run
        natively."""
        _check_native(self.mode, self.weight_grad)
        check_rescale(self.rescale, self.mode)
        w = self.weight
        if w.device.type != "cpu" or w.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"kernel='native' needs a CPU float32/float64 layer, not {w.device.type} {w.dtype}")
        _require_kernels("native")
        out = w.shape[0]
        k = resolve_k(self._k, out) or 0
        stats = self.stats
        if stats.width != out or stats.counts.device != w.device:
            stats.reset(out, w.device)
        if type(stats) is not NativeMePropStats:
            stats = self.stats = NativeMePropStats.from_stats(stats)
        if self.track_stats:
            counts, acc, last = stats.counts, stats._native, stats._native_last
        else:
            counts = acc = last = _NO_ROWS
        scale = out / k if self.rescale and k else 1.0  # random mode only (check_rescale)
        return k, _NATIVE_MODE_CODES[self.mode], scale, counts, acc, last

    def _native_forward(self, x: torch.Tensor) -> torch.Tensor:
        """kernel="native": the whole layer is one C++ autograd function (``meprop_linear_native``); layers with
        hooks (meSimp) take the fused Python path instead, with the same results."""
        k, mode, scale, counts, acc, last = self._native_args()
        w = self.weight
        flat = x if x.dim() == 2 else x.reshape(-1, w.shape[1])  # no view node for the common 2-D input
        y = _fused().meprop_linear_native(flat, w, self.bias, k, mode, scale, self.sparsify_bias,
                                          self.weight_grad == "sparse", self.count_zero_hits, counts, acc, last)
        return y if x.dim() == 2 else y.reshape(*x.shape[:-1], w.shape[0])

    def extra_repr(self) -> str:
        k = self.k_effective
        ks = "dense" if k is None else f"{k} ({k / self.out_features:.1%} of {self.out_features})"
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, k={ks}"
        if k is not None:
            s += f", mode={self.mode}"
            if self.rescale:
                s += ", rescale=True"
            if self.sparsify_bias:
                s += ", sparsify_bias=True"
        if self.weight_grad != "dense":
            s += f", weight_grad={self.weight_grad}"
        return s

    @classmethod
    def from_linear(cls, linear: nn.Linear, k=None, mode: str = "per_example", **kwargs) -> "MePropLinear":
        """A meProp layer with a copy of ``linear``'s weights."""
        layer = cls(
            linear.in_features,
            linear.out_features,
            k,
            mode,
            bias=linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
            **kwargs,
        )
        layer.load_state_dict(linear.state_dict())
        return layer

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with a copy of this layer's weights."""
        lin = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        lin.load_state_dict(self.state_dict())
        return lin
