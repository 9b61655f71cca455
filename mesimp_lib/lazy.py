"""Lazy optimizers: update only the weight rows that received a gradient. Taught in notebook 09 (speed).

**A departure from the papers**, which use unmodified optimizers. With meProp only a few rows
of each weight matrix get a gradient per step, but a standard Adam step still reads and writes
every row (and moves rows without gradient, through its moments). A lazy optimizer touches only
the rows with a gradient, so the optimizer step can shrink like the backward does.

Semantics (as ``torch.optim.SparseAdam`` and TensorFlow's LazyAdam):
    rows with a gradient this step    the usual update, with the *global* step count t for
                                      Adam's bias correction
    rows without                      nothing changes: not the parameter, not the moments
                                      (they do not decay while the row is idle)
    parameters with a dense gradient (biases, dense layers, a ``MePropLinear`` with the default
    ``weight_grad="dense"``) get the ordinary dense update: every row moves.

Which rows had a gradient comes from the gradient itself, which must be row-sparse: a
``MePropLinear`` with ``weight_grad="sparse"`` hands over a coalesced ``sparse_coo_tensor`` of
exactly the selected rows (no dense ``[out, in]`` gradient exists at all), so no scan of the
gradient is needed. Gradients come only through autograd, so ``zero_grad`` in both forms,
accumulation and in-place edits behave as with any optimizer. Embeddings built with ``sparse=True`` (the
NLP models do this when ``TrainConfig.optimizer`` is lazy) hand over the rows looked up the same way. Weight decay and AMSGrad are not
supported.

Speed: ``LazyAdam`` makes one native call per step for all its parameters (the C++ kernels of
``mesimp_lib.fused``, ``native=None`` = when they can be built) instead of a dozen PyTorch ops
per parameter; the pure-PyTorch loop is the reference and the fallback (same formula, equal to
float rounding). ``NativeMLP.step_in_backward(opt)`` (``mesimp_lib.tasks.native_mlp``) goes further for an MLP
whose layers are all ``kernel="native"``: the same update, applied inside the backward as each
weight row's gradient is formed, the gradient never stored (bit-equal to ``backward()`` +
``opt.step()``).
"""

from __future__ import annotations

import torch

from .validate import check_bool, check_float, refuse

__all__ = ["LazyAdam", "LazySGD", "grad_rows"]


def grad_rows(param: torch.Tensor) -> torch.Tensor | None:
    """Rows of ``param.grad`` that may be non-zero (from a row-sparse gradient); None if unknown
    (a dense gradient: treat every row as having one)."""
    if param.grad is not None and param.grad.is_sparse:
        return _coalesced(param)._indices()[0]
    return None


def _coalesced(param: torch.Tensor) -> torch.Tensor:
    """``param.grad`` as a coalesced row-sparse tensor, sorted only when it has to be.

    A meProp layer's row-sparse gradient holds sorted unique rows in every kernel, but autograd's gradient
    accumulation rebuilds the tensor and drops its ``is_coalesced`` flag; strictly increasing row indices (one
    comparison per row) are exactly what coalesced means for a row-sparse tensor, so the flag is set again and
    nothing is sorted. Anything else (an accumulated gradient, an embedding's repeated rows) is coalesced.
    """
    g = param.grad
    if g.is_coalesced():
        return g
    rows = g._indices()[0]
    if g.sparse_dim() == 1 and bool((rows[1:] > rows[:-1]).all()):
        return g._coalesced_(True)
    param.grad = g.coalesce()
    return param.grad


def _rows_and_values(p: torch.Tensor):
    """(rows, values) of a row-sparse gradient, or (None, dense gradient)."""
    if p.grad.is_sparse:
        g = _coalesced(p)
        return g._indices()[0], g._values()
    return None, p.grad


class LazyAdam(torch.optim.Optimizer):
    """Adam that updates only rows with a gradient (see the module docstring).
    Defaults as the paper's Adam: lr 1e-3, betas (0.9, 0.999), eps 1e-8.

    ``native``: None (default) = the one-call C++ step when the kernels can be built and every
    parameter is a contiguous CPU float32/float64 tensor; False = the PyTorch loop; True = the
    native step or an error saying why not."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, native: bool | None = None):
        lr = check_float("lr", lr, 0.0, lo_open=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            refuse("betas", betas, "a pair of finite numbers in [0, 1)")
        betas = tuple(check_float(f"betas[{i}]", b, 0.0, 1.0, hi_open=True) for i, b in enumerate(betas))
        eps = check_float("eps", eps, 0.0)
        check_bool("native", native, optional=True)
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.native = native

    def _kernels(self):
        if self.native is False:
            return None
        from .fused import kernels, status

        k = kernels()
        if k is None and self.native:
            raise RuntimeError(f"LazyAdam(native=True) but the native kernels are unavailable: {status()}")
        return k

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        kern = self._kernels()
        for group in self.param_groups:
            if kern is None or not self._native_step(kern, group):
                self._torch_step(group)
        return loss

    def _state(self, p: torch.Tensor) -> dict:
        st = self.state[p]
        if not st:
            st["step"] = torch.zeros((), dtype=torch.float32)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        return st

    def _native_step(self, kern, group) -> bool:
        """One native call for the group (it reads the gradients and counts the steps itself); False, with
        nothing changed, when a parameter cannot take it (not a contiguous CPU float32/float64 tensor)."""
        params, ms, vs, steps = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            st = self._state(p)
            params.append(p)
            ms.append(st["exp_avg"])
            vs.append(st["exp_avg_sq"])
            steps.append(st["step"])
        b1, b2 = group["betas"]
        return kern.lazy_adam_step(params, ms, vs, steps, group["lr"], b1, b2, group["eps"])

    def _torch_step(self, group) -> None:
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            st = self._state(p)
            st["step"] += 1
            t = float(st["step"])
            bc1, bc2 = 1 - b1**t, 1 - b2**t
            rows, g = _rows_and_values(p)
            m, v = st["exp_avg"], st["exp_avg_sq"]
            if rows is None:  # dense update, same formula
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.addcdiv_(m, (v / bc2).sqrt_().add_(eps), value=-lr / bc1)
                continue
            if rows.numel() == 0:
                continue
            mr = m.index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)  # (r, in)
            vr = v.index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
            m.index_copy_(0, rows, mr)
            v.index_copy_(0, rows, vr)
            p.index_add_(0, rows, mr.div_((vr / bc2).sqrt_().add_(eps)).mul_(-lr / bc1))


class LazySGD(torch.optim.Optimizer):
    """SGD (optionally with momentum) that updates only rows with a gradient. Without momentum
    it computes exactly what ``torch.optim.SGD`` does (idle rows have a zero gradient), only
    touching fewer rows; with momentum, idle rows keep their momentum buffer unchanged."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0):
        lr = check_float("lr", lr, 0.0, lo_open=True)
        momentum = check_float("momentum", momentum, 0.0, 1.0, hi_open=True)
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, mom = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                rows, g = _rows_and_values(p)
                if mom:
                    st = self.state[p]
                    if "momentum_buffer" not in st:
                        st["momentum_buffer"] = torch.zeros_like(p)
                    buf = st["momentum_buffer"]
                    if rows is None:
                        g = buf.mul_(mom).add_(g)
                    else:
                        g = buf.index_select(0, rows).mul_(mom).add_(g)
                        buf.index_copy_(0, rows, g)
                if rows is None:
                    p.add_(g, alpha=-lr)
                elif rows.numel():
                    p.index_add_(0, rows, g, alpha=-lr)
        return loss
