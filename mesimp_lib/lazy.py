"""Lazy optimizers: update only the weight rows that received a gradient.

**A departure from the papers**, which use unmodified optimizers. With meProp only a few rows
of each weight matrix get a gradient per step, but a standard Adam step still reads and writes
every row (and moves rows without gradient, through its moments). A lazy optimizer touches only
the rows with a gradient, so the optimizer step can shrink like the backward does.

Semantics (as ``torch.optim.SparseAdam`` and TensorFlow's LazyAdam):
    rows with a gradient this step    the usual update, with the *global* step count t for
                                      Adam's bias correction
    rows without                      nothing changes: not the parameter, not the moments
                                      (they do not decay while the row is idle)
    parameters without row information (biases, dense layers, weights whose gradient is
    not the meProp buffer) get the ordinary dense update.

Which rows had a gradient comes from ``MePropLinear``'s gradient buffer (the rows it wrote
since the buffer was last cleared), so no scan of the gradient is needed. Weight decay and
AMSGrad are not supported.
"""

from __future__ import annotations

import torch

__all__ = ["LazyAdam", "LazySGD", "grad_rows"]


def grad_rows(param: torch.Tensor) -> torch.Tensor | None:
    """Rows of ``param.grad`` that may be non-zero, from the meProp gradient buffer; None if
    unknown (treat as dense)."""
    buf = getattr(param, "_mesimp_gradbuf", None)
    if buf is None or param.grad is None or param.grad is not buf.tensor or buf.dirty is None:
        return None
    if not buf.dirty:
        return param.grad.new_empty(0, dtype=torch.long)
    return torch.unique(torch.cat(buf.dirty))


class LazyAdam(torch.optim.Optimizer):
    """Adam that updates only rows with a gradient (see the module docstring).
    Defaults as the paper's Adam: lr 1e-3, betas (0.9, 0.999), eps 1e-8."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"lr={lr} must be > 0")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas={betas} must be in [0, 1)")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                t = float(st["step"])
                bc1, bc2 = 1 - b1**t, 1 - b2**t
                rows = grad_rows(p)
                m, v = st["exp_avg"], st["exp_avg_sq"]
                if rows is None:  # dense update, same formula
                    g = p.grad
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.addcdiv_(m, (v / bc2).sqrt_().add_(eps), value=-lr / bc1)
                    continue
                if rows.numel() == 0:
                    continue
                g = p.grad.index_select(0, rows)  # (r, in)
                mr = m.index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
                vr = v.index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
                m.index_copy_(0, rows, mr)
                v.index_copy_(0, rows, vr)
                p.index_add_(0, rows, mr.div_((vr / bc2).sqrt_().add_(eps)).mul_(-lr / bc1))
        return loss


class LazySGD(torch.optim.Optimizer):
    """SGD (optionally with momentum) that updates only rows with a gradient. Without momentum
    it computes exactly what ``torch.optim.SGD`` does (idle rows have a zero gradient), only
    touching fewer rows; with momentum, idle rows keep their momentum buffer unchanged."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0):
        if not lr > 0:
            raise ValueError(f"lr={lr} must be > 0")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum={momentum} must be in [0, 1)")
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, mom = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                rows = grad_rows(p)
                g = p.grad if rows is None else p.grad.index_select(0, rows)
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
