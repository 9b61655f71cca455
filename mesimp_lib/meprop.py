"""meProp: top-k sparsified back propagation for a linear layer, ``MePropLinear``.

Taught in notebooks 01 (one step through by hand), 02 (training with it) and 09 (speed). The layer's parts live
in their own modules: which entries are kept (``selection``), what it records (``stats``), and its backward, one
function per selection and kernel (``meprop_backward``); the names are re-exported here.

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

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .meprop_backward import (BACKWARDS, NARROW_DENSE, NO_ROWS, _fused, _require_kernels, fused_applies,
                              narrow_dense_applies, weight_gradient)
from .selection import (TopKWidth, WeightDim, heap_fillers, heap_hits, heap_selected, resolve_k, select_per_example,
                        select_random, select_unified)
from .stats import MePropStats, NativeMePropStats, record
from .validate import check_bool, check_choice, check_device, check_dtype, check_float, check_size

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
    "NativeMePropStats",
    "NARROW_DENSE",
    "fused_applies",
    "narrow_dense_applies",
    "set_layer_options",
]
# selection, stats and meprop_backward hold the layer's parts; the names above that live there are re-exported

MODES = ("per_example", "unified", "random")
WEIGHT_GRADS = ("dense", "sparse")
KERNELS = ("torch", "fused", "auto", "native")
NATIVE_MODES = ("per_example", "random", "unified")
_NATIVE_MODE_CODES = {"per_example": 0, "random": 1, "unified": 2}  # the C++ functions' mode argument
NATIVE_WEIGHT_GRADS = ("sparse", "dense")


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
        r = BACKWARDS["dense" if plan.k is None else plan.mode, plan.fused](g, x, weight, plan, need, stats)
        if stats is not None:
            record(stats, g, r.idx, plan, x.shape[1], r.touched, r.computed, need[0], need[1], counted=r.counted)
        if hooks is not None:
            for observer in hooks.observers:
                observer.observe(g, r.idx, plan)
        return r.grad_x, weight_gradient(r, plan, weight), r.grad_b, None, None, None


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


def set_layer_options(layer, mode: str, kernel: str, kernels: tuple, *, rescale: bool, sparsify_bias: bool,
                      count_zero_hits: bool, compact_threshold: float, track_stats: bool, device, dtype,
                      **flags) -> None:
    """Validate the constructor options a meProp linear layer and LSTM share and set them on ``layer``: ``mode``,
    ``kernel`` (one of ``kernels``), ``rescale`` (random mode only), ``sparsify_bias``, ``count_zero_hits``,
    ``compact_threshold``, ``track_stats``; ``device`` / ``dtype`` and the further bool ``flags`` (``bias``, ...)
    are validated only."""
    check_layer_flags(compact_threshold, device, dtype, rescale=rescale, sparsify_bias=sparsify_bias,
                      count_zero_hits=count_zero_hits, track_stats=track_stats, **flags)
    _check_mode(mode)
    check_rescale(rescale, mode)  # at the boundary too (and again at every forward, if mode changes later)
    check_choice("kernel", kernel, kernels)
    layer.mode, layer.kernel, layer.rescale, layer.sparsify_bias = mode, kernel, rescale, sparsify_bias
    layer.count_zero_hits, layer.compact_threshold, layer.track_stats = count_zero_hits, compact_threshold, track_stats


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
        set_layer_options(self, mode, kernel, KERNELS, rescale=rescale, sparsify_bias=sparsify_bias,
                          count_zero_hits=count_zero_hits, compact_threshold=compact_threshold, track_stats=track_stats,
                          device=device, dtype=dtype, bias=bias)
        _check_weight_grad(weight_grad)
        if kernel == "native":
            _check_native(mode, weight_grad)
        self.weight_grad = weight_grad
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.k = k  # validated by the setter
        self.stats = (NativeMePropStats if kernel == "native" else MePropStats)(out_features, device=self.weight.device)
        self.hooks = LayerHooks()
        self.reset_parameters()

    # same initialisation as nn.Linear, so equal seeds give equal weights
    reset_parameters = nn.Linear.reset_parameters

    in_features = WeightDim("weight", 1)  # sizes follow the weight (meSimp shrinks it)
    out_features = WeightDim("weight", 0)
    _topk_width = WeightDim("weight", 0)

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
            counts = acc = last = NO_ROWS
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
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
        s += self.k_repr()
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
