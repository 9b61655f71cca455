"""What the benchmark measures: one meProp layer's backward, the paper's MNIST MLP (whole backward, its floor, a
whole training step), an LSTM direction and the inference of meSimp-simplified models, each against its dense
baseline, timed by ``bench_timing.abba``.

Backward alone is timed with ``torch.autograd.grad`` on a graph built once (``retain_graph=True``), and
correctness is checked in the same run (meProp's gradients against a masked dense reference). Dense = PyTorch's
own ``F.linear`` autograd (the strongest baseline). meProp = a ``MePropLinear`` as users get it (stats on, the
default ``weight_grad="dense"``: a dense weight gradient returned through autograd, zero outside the selected
rows), or with ``weight_grad="sparse"`` (the selected rows only, for SGD and the lazy optimizers).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from .bench_targets import topk_mask
from .bench_timing import abba, keeps_threads, mlp_backward_limit, mlp_step_limit, two_backwards
from .meprop import MePropLinear, _fused
from .validate import check_choice

__all__ = ["STEP_VARIANTS", "bench_backward_floor", "bench_inference", "bench_layer", "bench_lstm", "bench_mlp",
           "bench_step"]


@keeps_threads
def bench_layer(batch: int, n: int, k: int, mode: str = "unified", threads: int = 1, scale: float = 1.0, seed: int = 0,
                weight_grad: str = "dense", kernel: str = "torch") -> dict:
    """One square layer (n -> n): dense backward vs meProp backward (``weight_grad``: "dense", the gradient any
    optimizer takes, or "sparse", the row-sparse gradient of the selected rows; ``kernel``: "torch"
    = the pure-PyTorch backward, "fused" = the native kernels, "auto" = the library's default).

    Runs with ``threads`` torch threads and gives the caller's count back. Like every measurement here it
    first sets glibc's allocator as ``make bench`` does (``bench_timing.steady_allocator``: no mmap, no
    trimming); that lasts for the rest of the process, which then keeps the memory it freed."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, generator=gen, requires_grad=True)
    layer = MePropLinear(n, n, k=k, mode=mode, bias=False, weight_grad=weight_grad, kernel=kernel)
    w_dense = layer.weight.detach().clone().requires_grad_(True)
    g = torch.randn(batch, n, generator=gen)
    y_dense = F.linear(x, w_dense)
    y_sparse = layer(x)

    def dense():
        torch.autograd.grad(y_dense, (x, w_dense), g, retain_graph=True)

    def sparse():
        torch.autograd.grad(y_sparse, (x, layer.weight), g, retain_graph=True)

    ratio, td, ts, rounds = abba(dense, sparse, 7, scale)
    vs_masked = None
    if mode != "unified":  # per example: also against the plain masked-dense product
        masked = MePropLinear(n, n, k=k, mode=mode, bias=False, compact_threshold=0.0, kernel="torch")
        masked.load_state_dict(layer.state_dict())
        y_masked = masked(x)

        def masked_fn():
            torch.autograd.grad(y_masked, (x, masked.weight), g, retain_graph=True)

        vs_masked, _, _, _ = abba(masked_fn, sparse, 7, scale)

    # correctness in the same run: input and weight gradients vs a masked dense reference
    gx, gw = torch.autograd.grad(y_sparse, (x, layer.weight), g, retain_graph=True)
    gw = gw.to_dense() if gw.is_sparse else gw
    gk = g * topk_mask(g, k, mode)
    ok = torch.allclose(gx, gk @ layer.weight.detach(), rtol=1e-4, atol=1e-4) and torch.allclose(
        gw, gk.t() @ x.detach(), rtol=1e-4, atol=1e-4
    )
    return {
        "batch": batch, "n": n, "k": k, "k_frac": k / n, "mode": mode, "threads": threads, "weight_grad": weight_grad,
        "kernel": kernel, "dense_ms": td * 1e3, "meprop_ms": ts * 1e3, "speedup": ratio, "limit": n / k,
        "rounds": rounds, "correct": bool(ok), "speedup_vs_masked": vs_masked,
    }


def _mlp(kernel: str, **kwargs):
    """The paper's MLP; with kernel "native" the opt-in ``NativeMLP`` (one C++ autograd node)."""
    from .tasks.mnist import MLP
    from .tasks.native_mlp import NativeMLP

    return (NativeMLP if kernel == "native" else MLP)(kernel=kernel, **kwargs)


@keeps_threads
def bench_mlp(batch: int, k: int, mode: str, threads: int = 1, scale: float = 1.0, seed: int = 0,
              kernel: str = "torch", weight_grad: str = "dense") -> dict:
    """The paper's MNIST MLP 784-500-500-10: whole-model backward, dense vs meProp (kernel "native": the
    ``NativeMLP``, the whole network as one C++ autograd node)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    sparse = _mlp(k=k, mode=mode, kernel=kernel, weight_grad=weight_grad)
    dense = sparse.to_sequential()  # plain nn.Linear layers, same weights
    x = torch.rand(batch, 784)
    y = torch.randint(0, 10, (batch,))
    out_d, out_s = dense(x), sparse(x)
    ratio, td, ts, rounds, g_ratio, g_td, g_ts = two_backwards(
        out_d, list(dense.parameters()), out_s, list(sparse.parameters()), y, scale, clear_other=True)
    return {
        "batch": batch, "n": 500, "k": k, "k_frac": k / 500, "mode": mode, "threads": threads,
        "dense_ms": td * 1e3, "meprop_ms": ts * 1e3, "speedup": ratio, "limit": 500 / k,
        "grad_dense_ms": g_td * 1e3, "grad_meprop_ms": g_ts * 1e3, "grad_speedup": g_ratio,
        "limit_backward": mlp_backward_limit(k), "kernel": kernel, "weight_grad": weight_grad,
        "rounds": rounds, "correct": True, "shape": "784-500-500-10 (whole backward)",
    }


class _NoWork(torch.autograd.Function):
    """A backward node that does no work and returns no gradient (the floor measurement)."""

    @staticmethod
    def forward(ctx, x, *params):
        ctx.n_inputs = 1 + len(params)
        return x.new_zeros(x.shape[0], 10)

    @staticmethod
    def backward(ctx, g):
        return (None,) * ctx.n_inputs


@keeps_threads
def bench_backward_floor(batch: int = 10, threads: int = 1, scale: float = 1.0, seed: int = 0) -> dict:
    """The floor of a whole ``loss.backward()`` at the paper's MLP shapes: the cross-entropy's nodes, the autograd
    engine and ONE backward node that does no work and returns no gradient, against the dense 784-500-500-10
    backward, interleaved A-B-B-A. No meProp backward measured through ``loss.backward()`` can beat this ratio,
    whatever its kernels: it would still have to compute and hand over six gradients."""
    from .tasks.mnist import MLP

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dense = MLP().to_sequential()
    params = list(dense.parameters())
    x = torch.rand(batch, 784)
    y = torch.randint(0, 10, (batch,))
    out_d = dense(x)
    kern = _fused()
    if kern is not None:  # a C++ node, as the whole-network meProp node is (cheaper than a Python Function)
        node, no_work = "C++", kern.no_work_node(x, params, 10)
    else:
        node, no_work = "Python", _NoWork.apply(x, *params)
    ratio, td, ts, rounds, g_ratio, g_td, g_ts = two_backwards(out_d, params, no_work, params, y, scale,
                                                                clear_other=False)
    return {"batch": batch, "threads": threads, "dense_ms": td * 1e3, "floor_ms": ts * 1e3, "speedup": ratio,
            "grad_dense_ms": g_td * 1e3, "grad_floor_ms": g_ts * 1e3, "grad_speedup": g_ratio,
            "rounds": rounds, "shape": "784-500-500-10 (whole backward)",
            "node": node, "note": f"loss nodes + autograd engine + one {node} backward node doing no work, no gradients"}


STEP_BLOCK_S = 0.02  # whole-step timing blocks: ~10 steps of one variant in a row (see abba)

STEP_VARIANTS = {
    # name: (meProp?, kernel, weight_grad, optimizer) - the optimizer is "adam" (torch.optim.Adam, fused=True,
    # the paper's unmodified optimizer) or "lazy_adam" (mesimp_lib.lazy.LazyAdam: NOT the paper's optimizer)
    "dense + Adam": (False, "torch", "dense", "adam"),
    "meProp + Adam": (True, "torch", "dense", "adam"),
    "meProp fused + Adam": (True, "fused", "dense", "adam"),
    "meProp fused + lazy Adam": (True, "fused", "sparse", "lazy_adam"),
    # the layer as a C++ autograd function (MePropLinear(kernel="native"))
    "meProp native + lazy Adam": (True, "native", "sparse", "lazy_adam"),
    # the same update applied inside the backward (NativeMLP.step_in_backward): no gradient tensors stored
    "meProp native + lazy Adam in backward": (True, "native", "sparse", "lazy_adam_in_backward"),
}


@keeps_threads
def bench_step(batch: int, k: int, mode: str, variant: str, threads: int = 1, scale: float = 1.0, seed: int = 0,
               sections: bool = True) -> dict:
    """A whole training step of the 784-500-500-10 MLP (forward + loss + backward + optimizer step) against
    dense + Adam, interleaved A-B-B-A in one process; plus the median time of each section per variant."""
    from .lazy import LazyAdam

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as train() does: Adam's idle moments decay into denormals
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(64 * batch, 784, generator=gen)  # a few different mini-batches, cycled
    y = torch.randint(0, 10, (64 * batch,), generator=gen)

    def make(name):
        meprop, kernel, weight_grad, opt_name = STEP_VARIANTS[name]
        torch.manual_seed(seed)
        model = _mlp(k=k if meprop else None, mode=mode, kernel=kernel, weight_grad=weight_grad)
        if opt_name == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        else:
            opt = LazyAdam(model.parameters(), lr=1e-3)
            if opt_name == "lazy_adam_in_backward":
                model.step_in_backward(opt)
        in_backward = opt_name == "lazy_adam_in_backward"
        state = {"i": 0, "t": [0.0, 0.0, 0.0]}

        def step(timed=False):
            i = state["i"] = (state["i"] + 1) % 64
            xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(xb), yb)
            t1 = time.perf_counter()
            if not in_backward:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            t2 = time.perf_counter()
            if not in_backward:  # the update happened in backward: nothing left for zero_grad / step
                opt.step()
            if timed:
                t3 = time.perf_counter()
                state["t"] = [t1 - t0, t2 - t1, t3 - t2]

        return step, state

    dense_step, dense_state = make("dense + Adam")
    step, state = make(variant)
    try:
        ratio, td, ts, rounds = abba(dense_step, step, 15, scale, block_s=STEP_BLOCK_S)
        split = {}
        if sections:  # forward / backward / optimizer medians, each variant alone
            for name, (fn, st) in (("dense", (dense_step, dense_state)), ("meprop", (step, state))):
                rows = []
                for _ in range(max(30, int(100 * scale))):
                    fn(True)
                    rows.append(st["t"])
                split[name] = {key: statistics.median(r[j] for r in rows) * 1e3
                               for j, key in enumerate(("forward_ms", "backward_ms", "optimizer_ms"))}
    finally:
        torch.set_flush_denormal(False)  # PyTorch's default (the previous setting cannot be read)
    return {
        "batch": batch, "n": 500, "k": k, "k_frac": k / 500, "mode": mode, "threads": threads, "variant": variant,
        "lazy": STEP_VARIANTS[variant][3].startswith("lazy_adam"), "dense_ms": td * 1e3, "meprop_ms": ts * 1e3,
        "speedup": ratio, "limit_backward": mlp_backward_limit(k), "limit_fwd_bwd": mlp_step_limit(k),
        "rounds": rounds, "correct": True,
        "sections": split, "shape": "784-500-500-10 (whole step)",
    }


def bench_inference(rounds: int = 5) -> list[dict]:
    """meSimp-simplified MNIST models: inference speed against their parameter ratio, measured in this run
    (``experiments.measure_inference``: the saved models of ``data/results/mesimp_mnist`` against a
    784-500-500-10 network, interleaved in one process, 1 thread); [] when no model is saved."""
    from .experiments import measure_inference

    rows = []
    for r in measure_inference(rounds):
        for key in ("batch1", "batch1000"):
            rows.append({"model": r["model"], "widths": r["widths"], "param_ratio": r["param_ratio"],
                         "batch": int(key[5:]), "speedup": r[key]["speedup"], "limit": 1 / r["param_ratio"],
                         "original_ms": r[key]["original_ms"], "simplified_ms": r[key]["simplified_ms"],
                         "test_acc": r["test_acc_final_model"], "rounds": rounds, "source": "measured in this run"})
    return rows


LSTM_BASELINES = ("nn.LSTM", "MePropLSTM k=None")


@keeps_threads
def bench_lstm(batch: int, k: int, steps: int = 25, hidden: int = 500, embed: int = 100, threads: int = 1,
               scale: float = 1.0, seed: int = 0, baseline: str = "nn.LSTM") -> dict:
    """One LSTM direction at the POS tagger's shapes: forward + backward of ``MePropLSTM`` (per-example top-k
    per gate) against a dense baseline, interleaved A-B-B-A: ``baseline="nn.LSTM"`` (PyTorch's own fused
    kernels) or ``"MePropLSTM k=None"`` (the same code with nothing cut: what the top-k itself saves)."""
    from .lstm import MePropLSTM

    check_choice("baseline", baseline, LSTM_BASELINES)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    sparse = MePropLSTM(embed, hidden, k=k)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, embed, generator=gen, requires_grad=True)
    g = torch.randn(batch, steps, hidden, generator=gen)
    if baseline == "nn.LSTM":
        dense = torch.nn.LSTM(embed, hidden, batch_first=True)

        def run_dense():
            out, _ = dense(x)
            torch.autograd.grad(out, [x, *dense.parameters()], g)
    else:
        same = MePropLSTM(embed, hidden, k=None)

        def run_dense():
            torch.autograd.grad(same(x), [x, *same.parameters()], g)

    def run_sparse():
        for p in sparse.parameters():
            p.grad = None
        sparse(x).backward(g)

    ratio, td, ts, rounds = abba(run_dense, run_sparse, 7, scale)
    # multiply-adds: forward 4h(in+h) per token, dense backward 2 * 4h(in+h) (dx, dh, dW_ih, dW_hh), sparse 2 * 4k(in+h)
    return {"batch": batch, "steps": steps, "hidden": hidden, "embed": embed, "k": k, "threads": threads,
            "baseline": baseline, "dense_ms": td * 1e3, "meprop_ms": ts * 1e3, "speedup": ratio,
            "limit_backward": hidden / k, "limit_fwd_bwd": 3 / (1 + 2 * k / hidden),
            "rounds": rounds, "note": f"forward + backward of one direction, T={steps} tokens per sentence"}
