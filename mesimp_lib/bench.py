"""Backward-speed benchmark, measured as PERFORMANCE.md prescribes.

One process; dense and meProp interleaved A-B-B-A per round; the ratio is taken per round
and the median over rounds is reported; warm-up calls first; correctness is checked in the
same run (meProp's input gradient against a masked dense reference). Backward alone is
timed with ``torch.autograd.grad`` on a graph built once (``retain_graph=True``).

Dense = PyTorch's own ``F.linear`` autograd (the strongest baseline). meProp = a
``MePropLinear`` as users get it (stats on, the default ``weight_grad="dense"``: a dense weight gradient
returned through autograd, zero outside the selected rows), or with ``weight_grad="sparse"`` (the selected
rows only, for SGD and the lazy optimizers).
"""

from __future__ import annotations

import os
import statistics
import time

import torch
import torch.nn.functional as F

from .bench_targets import run_targets, targets_markdown, topk_mask
from .meprop import MePropLinear, _fused
from .files import write_atomic
from .results import environment, write_json_atomic

__all__ = ["bench_inference", "bench_layer", "bench_lstm", "bench_mlp", "bench_step", "run_benchmark", "to_markdown"]

# the paper's MNIST MLP: backward multiply-adds of the two hidden layers' products (dx and dW; the first
# layer needs no dx) and of the dense output layer, for the FLOP limit of the whole backward
_MLP_SIZES = (784, 500, 500, 10)


def _mlp_step_limit(k: int) -> float:
    """Dense / meProp multiply-adds of forward + backward (the optimizer is not counted)."""
    (i, h1, h2, o) = _MLP_SIZES
    fwd = h1 * i + h2 * h1 + o * h2
    dense = h1 * i + 2 * h2 * h1 + 2 * o * h2
    sparse = k * i + 2 * k * h1 + 2 * o * h2
    return (fwd + dense) / (fwd + sparse)


def _mlp_backward_limit(k: int) -> float:
    """Dense / meProp multiply-adds of the 784-500-500-10 backward (hidden layers top-k, output dense)."""
    (i, h1, h2, o) = _MLP_SIZES
    dense = h1 * i + 2 * h2 * h1 + 2 * o * h2
    sparse = k * i + 2 * k * h1 + 2 * o * h2
    return dense / sparse


def _time_call(fn, inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def _abba(dense_fn, sparse_fn, min_rounds: int, scale: float = 1.0, block_s: float = 1e-3):
    """Median per-round ratio dense/sparse and median times (seconds). Each timed block repeats a call for
    >= ``block_s`` seconds (timer noise; for whole training steps, a steady state as in training, where one
    variant runs step after step, instead of every step starting in the caches the other variant left)."""
    for _ in range(3):  # warm-up
        dense_fn()
        sparse_fn()
    t_est = max(_time_call(dense_fn, 1), 1e-6)
    inner = max(1, int(block_s / t_est))
    rounds = max(min_rounds, 30 if t_est < 1e-3 else (7 if t_est > 0.1 else 15))
    rounds = max(3, int(rounds * scale))
    ratios, td, ts = [], [], []
    for _ in range(rounds):
        d1 = _time_call(dense_fn, inner)
        s1 = _time_call(sparse_fn, inner)
        s2 = _time_call(sparse_fn, inner)
        d2 = _time_call(dense_fn, inner)
        ratios.append((d1 + d2) / (s1 + s2))
        td += [d1, d2]
        ts += [s1, s2]
    return statistics.median(ratios), statistics.median(td), statistics.median(ts), rounds


def bench_layer(batch: int, n: int, k: int, mode: str = "unified", threads: int = 1, scale: float = 1.0, seed: int = 0,
                weight_grad: str = "dense", kernel: str = "torch") -> dict:
    """One square layer (n -> n): dense backward vs meProp backward (``weight_grad``: "dense", the gradient any
    optimizer takes, or "sparse", the row-sparse gradient of the selected rows; ``kernel``: "torch"
    = the pure-PyTorch backward, "fused" = the native kernels)."""
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

    ratio, td, ts, rounds = _abba(dense, sparse, 7, scale)
    vs_masked = None
    if mode != "unified":  # per example: also against the plain masked-dense product
        masked = MePropLinear(n, n, k=k, mode=mode, bias=False, compact_threshold=0.0)
        masked.load_state_dict(layer.state_dict())
        y_masked = masked(x)

        def masked_fn():
            torch.autograd.grad(y_masked, (x, masked.weight), g, retain_graph=True)

        vs_masked, _, _, _ = _abba(masked_fn, sparse, 7, scale)

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


def _two_backwards(out_d, params_d, out_o, params_o, y, scale: float, clear_other: bool):
    """Dense against another model of the same outputs, interleaved A-B-B-A, measured twice: ``loss.backward()``
    of the cross-entropy (a training step's backward, gradients accumulated into ``.grad``), and the model
    backward from the output gradient, ``torch.autograd.grad(out, params, g)`` on a graph built once, as
    PERFORMANCE.md prescribes for layers (no loss nodes, no accumulation into ``.grad``). ``clear_other``: set the other
    model's ``.grad`` to None before each call (a model that writes gradients). Returns (ratio, dense s, other s,
    rounds) of the first and (ratio, dense s, other s) of the second."""
    loss_d, loss_o = F.cross_entropy(out_d, y), F.cross_entropy(out_o, y)

    def run_dense():
        for p in params_d:
            p.grad = None
        loss_d.backward(retain_graph=True)

    def run_other():
        if clear_other:
            for p in params_o:
                p.grad = None
        loss_o.backward(retain_graph=True)

    ratio, td, to, rounds = _abba(run_dense, run_other, 15, scale)
    g = torch.autograd.grad(loss_d, out_d, retain_graph=True)[0]

    def grad_dense():
        torch.autograd.grad(out_d, params_d, g, retain_graph=True)

    def grad_other():
        if clear_other:
            for p in params_o:
                p.grad = None
        torch.autograd.grad(out_o, params_o, g, retain_graph=True, allow_unused=True)

    g_ratio, g_td, g_to, _ = _abba(grad_dense, grad_other, 15, scale)
    return ratio, td, to, rounds, g_ratio, g_td, g_to


def bench_mlp(batch: int, k: int, mode: str, threads: int = 1, scale: float = 1.0, seed: int = 0,
              kernel: str = "torch", weight_grad: str = "dense") -> dict:
    """The paper's MNIST MLP 784-500-500-10: whole-model backward, dense vs meProp."""
    from .tasks.mnist import MLP

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    sparse = MLP(k=k, mode=mode, kernel=kernel, weight_grad=weight_grad)
    dense = sparse.to_sequential()  # plain nn.Linear layers, same weights
    x = torch.rand(batch, 784)
    y = torch.randint(0, 10, (batch,))
    out_d, out_s = dense(x), sparse(x)
    ratio, td, ts, rounds, g_ratio, g_td, g_ts = _two_backwards(
        out_d, list(dense.parameters()), out_s, list(sparse.parameters()), y, scale, clear_other=True)
    return {
        "batch": batch, "n": 500, "k": k, "k_frac": k / 500, "mode": mode, "threads": threads,
        "dense_ms": td * 1e3, "meprop_ms": ts * 1e3, "speedup": ratio, "limit": 500 / k,
        "grad_dense_ms": g_td * 1e3, "grad_meprop_ms": g_ts * 1e3, "grad_speedup": g_ratio,
        "limit_backward": _mlp_backward_limit(k), "kernel": kernel, "weight_grad": weight_grad,
        "rounds": rounds, "correct": True, "shape": "784-500-500-10 (whole backward)",
    }


_LAYER_DW = {"sparse": " (sparse dW)", "buffer": " (buffer dW, removed form)"}


def _removed_buffer_note(res: dict) -> list[str]:
    """A line for stored results measured with the removed "buffer" weight gradient, if any."""
    rows = [*res.get("layer", []), *res.get("mlp", [])]
    if not any(r.get("weight_grad", "buffer") == "buffer" for r in rows):
        return []
    return ["- **measured before the `buffer` weight gradient was removed**: rows labelled `buffer` wrote the "
            "gradient into a persistent row-re-zeroed buffer (a side effect of backward, wrong under DDP, "
            "`autograd.grad` and `functional_call`); the default is now `dense` (the same gradient numbers, "
            "returned through autograd in a zero-filled `[out, in]` tensor), whose time these rows do not "
            "show until `make bench` is re-run."]


def _weight_grad_label(row: dict) -> str:
    """A stored row's weight gradient; rows measured before the "buffer" form was removed say so."""
    wg = row.get("weight_grad", "buffer")
    return "buffer (removed form)" if wg == "buffer" else wg


class _NoWork(torch.autograd.Function):
    """A backward node that does no work and returns no gradient (the floor measurement)."""

    @staticmethod
    def forward(ctx, x, *params):
        ctx.n_inputs = 1 + len(params)
        return x.new_zeros(x.shape[0], 10)

    @staticmethod
    def backward(ctx, g):
        return (None,) * ctx.n_inputs


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
    ratio, td, ts, rounds, g_ratio, g_td, g_ts = _two_backwards(out_d, params, no_work, params, y, scale,
                                                                clear_other=False)
    return {"batch": batch, "threads": threads, "dense_ms": td * 1e3, "floor_ms": ts * 1e3, "speedup": ratio,
            "grad_dense_ms": g_td * 1e3, "grad_floor_ms": g_ts * 1e3, "grad_speedup": g_ratio,
            "rounds": rounds, "shape": "784-500-500-10 (whole backward)",
            "node": node, "note": f"loss nodes + autograd engine + one {node} backward node doing no work, no gradients"}


STEP_BLOCK_S = 0.02  # whole-step timing blocks: ~10 steps of one variant in a row (see _abba)

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


def bench_step(batch: int, k: int, mode: str, variant: str, threads: int = 1, scale: float = 1.0, seed: int = 0,
               sections: bool = True) -> dict:
    """A whole training step of the 784-500-500-10 MLP (forward + loss + backward + optimizer step) against
    dense + Adam, interleaved A-B-B-A in one process; plus the median time of each section per variant."""
    from .lazy import LazyAdam
    from .tasks.mnist import MLP
    from .tasks.native_mlp import NativeMLP

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as train() does: Adam's idle moments decay into denormals
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(64 * batch, 784, generator=gen)  # a few different mini-batches, cycled
    y = torch.randint(0, 10, (64 * batch,), generator=gen)

    def make(name):
        meprop, kernel, weight_grad, opt_name = STEP_VARIANTS[name]
        torch.manual_seed(seed)
        cls = NativeMLP if kernel == "native" else MLP  # native: the whole network as one C++ node
        model = cls(k=k if meprop else None, mode=mode, kernel=kernel, weight_grad=weight_grad)
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
        ratio, td, ts, rounds = _abba(dense_step, step, 15, scale, block_s=STEP_BLOCK_S)
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
        "speedup": ratio, "limit_backward": _mlp_backward_limit(k), "limit_fwd_bwd": _mlp_step_limit(k),
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


def bench_lstm(batch: int, k: int, steps: int = 25, hidden: int = 500, embed: int = 100, threads: int = 1,
               scale: float = 1.0, seed: int = 0, baseline: str = "nn.LSTM") -> dict:
    """One LSTM direction at the POS tagger's shapes: forward + backward of ``MePropLSTM`` (per-example top-k
    per gate) against a dense baseline, interleaved A-B-B-A: ``baseline="nn.LSTM"`` (PyTorch's own fused
    kernels) or ``"MePropLSTM k=None"`` (the same code with nothing cut: what the top-k itself saves)."""
    from .lstm import MePropLSTM
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
    elif baseline == "MePropLSTM k=None":
        same = MePropLSTM(embed, hidden, k=None)

        def run_dense():
            torch.autograd.grad(same(x), [x, *same.parameters()], g)
    else:
        raise ValueError(f"baseline={baseline!r} is not allowed; allowed: nn.LSTM, MePropLSTM k=None")

    def run_sparse():
        for p in sparse.parameters():
            p.grad = None
        sparse(x).backward(g)

    ratio, td, ts, rounds = _abba(run_dense, run_sparse, 7, scale)
    # multiply-adds: forward 4h(in+h) per token, dense backward 2 * 4h(in+h) (dx, dh, dW_ih, dW_hh), sparse 2 * 4k(in+h)
    return {"batch": batch, "steps": steps, "hidden": hidden, "embed": embed, "k": k, "threads": threads,
            "baseline": baseline, "dense_ms": td * 1e3, "meprop_ms": ts * 1e3, "speedup": ratio,
            "limit_backward": hidden / k, "limit_fwd_bwd": 3 / (1 + 2 * k / hidden),
            "rounds": rounds, "note": f"forward + backward of one direction, T={steps} tokens per sentence"}


def run_benchmark(quick: bool = False, scale: float = 1.0, progress=print) -> dict:
    """The grid of PERFORMANCE.md (or a small subset with ``quick``)."""
    old_threads = torch.get_num_threads()
    layer_rows, mlp_rows = [], []
    if quick:
        grid = [(32, 2048, 0.01), (256, 500, 0.01)]
        scale = min(scale, 0.3)
    else:
        grid = [(b, n, f) for n in (500, 2048, 8192) for b in (1, 32, 256) for f in (0.01, 0.05, 0.25)]
    try:
        target_rows = run_targets(scale, progress)
        for b, n, f in grid:
            k = max(1, round(f * n))
            row = bench_layer(b, n, k, "unified", 1, scale)
            layer_rows.append(row)
            progress(_line(row))
        from .fused import status

        kernel_status = status()
        fused_ok = kernel_status.startswith("fused")
        # the row-sparse weight gradient (SGD / the lazy optimizers) skips the dense gradient's zero-filled
        # [out, in] tensor; the fused native kernel (kernel="fused") with either weight gradient
        layer_variants = [("torch", "sparse")] + ([("fused", "dense"), ("fused", "sparse")] if fused_ok else [])
        for b, n in ((32, 2048), (32, 8192)) if not quick else ((32, 2048),):
            for kernel, wg in layer_variants:
                row = bench_layer(b, n, max(1, round(0.01 * n)), "unified", 1, scale, weight_grad=wg, kernel=kernel)
                layer_rows.append(row)
                progress(_line(row) + ("  (sparse dW)" if wg == "sparse" else ""))
        all_cores = os.cpu_count() or 1
        if not quick and all_cores > 1:
            for b, n in ((32, 2048), (32, 8192)):
                row = bench_layer(b, n, max(1, round(0.01 * n)), "unified", all_cores, scale)
                layer_rows.append(row)
                progress(_line(row))
        for b, n, f in ([(10, 500, 0.04)] if quick else [(10, 500, 0.04), (32, 2048, 0.01), (256, 500, 0.01)]):
            row = bench_layer(b, n, max(1, round(f * n)), "per_example", 1, scale)
            layer_rows.append(row)
            progress(_line(row))
        variants = [("torch", "dense")] + ([("fused", "dense"), ("fused", "sparse"), ("native", "sparse")]
                                            if fused_ok else [])
        for b in (10,) if quick else (10, 50):
            for mode in ("per_example", "unified"):
                for k in (20,) if quick else (10, 20, 40, 80):
                    for kernel, wg in variants:
                        row = bench_mlp(b, k, mode, 1, scale, kernel=kernel, weight_grad=wg)
                        mlp_rows.append(row)
                        progress(_line(row))
        floor_rows = [bench_backward_floor(b, 1, scale) for b in ((10,) if quick else (10, 50))]
        for r in floor_rows:
            progress(f"floor of loss.backward() batch {r['batch']:3d}: dense {r['dense_ms']:.3f} ms, a node doing no "
                     f"work {r['floor_ms']:.3f} ms, ratio {r['speedup']:.2f}x")
        step_rows = []
        step_variants = [v for v in STEP_VARIANTS if v != "dense + Adam" and (fused_ok or STEP_VARIANTS[v][1] == "torch")]
        for b in (10,) if quick else (10, 50):
            for mode in ("per_example",) if quick else ("per_example", "unified"):
                for v in step_variants:
                    row = bench_step(b, 20, mode, v, 1, scale, sections=not quick)
                    step_rows.append(row)
                    progress(_line(row))
        lstm_rows = []
        if not quick:
            for baseline in ("nn.LSTM", "MePropLSTM k=None"):
                for b in (1, 32):
                    for k in (5, 20):
                        row = bench_lstm(b, k, scale=scale, baseline=baseline)
                        lstm_rows.append(row)
                        progress(f"LSTM h=500 emb=100 batch {b:3d} T={row['steps']} k={k:2d} vs {baseline}: dense "
                                 f"{row['dense_ms']:.2f} ms meProp {row['meprop_ms']:.2f} ms speedup {row['speedup']:.2f}x")
        inference_rows = []
        if not quick:
            inference_rows = bench_inference(max(3, int(5 * scale)))
            for row in inference_rows:
                progress(f"inference {row['model']} widths {row['widths']} batch {row['batch']:4d}: original "
                         f"{row['original_ms']:.1f} ms simplified {row['simplified_ms']:.1f} ms speedup "
                         f"{row['speedup']:.2f}x (limit {row['limit']:.1f})")
    finally:
        torch.set_num_threads(old_threads)
    env = environment()
    env["torch_threads"] = "per row (1 unless stated)"
    env["meprop_kernels"] = kernel_status
    return {"quick": quick, "targets": target_rows, "layer": layer_rows, "mlp": mlp_rows, "floor": floor_rows, "step": step_rows,
            "lstm": lstm_rows,
            "inference": inference_rows, "environment": env}


def _line(r: dict) -> str:
    what = r.get("shape", f"layer n={r['n']}")
    if "variant" in r:
        what = f"{r['variant']} (step)"
    elif "kernel" in r and "shape" in r:
        what = f"MLP bwd {r['kernel']}/{r['weight_grad']}"
    elif r.get("kernel", "torch") != "torch":
        what = f"layer n={r['n']} {r['kernel']}/{r['weight_grad']}"
    return (
        f"{what:34s} batch {r['batch']:4d}  k={r['k']:4d} ({100 * r['k_frac']:4.1f}%)  {r['mode']:11s} "
        f"threads {r['threads']}  dense {r['dense_ms']:9.3f} ms  meProp {r['meprop_ms']:8.3f} ms  "
        f"speedup {r['speedup']:6.2f}x  (limit {r.get('limit_fwd_bwd', r.get('limit_backward', r.get('limit'))):5.1f})  "
        f"{'ok' if r['correct'] else 'WRONG'}"
        + (f"  vs masked {r['speedup_vs_masked']:.2f}x" if r.get("speedup_vs_masked") else "")
    )


def _grad_cols(r: dict, other_ms: str) -> str:
    """The model-backward columns of a row (dense ms | other ms | ratio), or dashes for rows stored without them."""
    if "grad_speedup" not in r:
        return "- | - | -"
    return f"{r['grad_dense_ms']:.3f} | {r[other_ms]:.3f} | **{r['grad_speedup']:.2f}x**"


def to_markdown(res: dict) -> str:
    env = res["environment"]
    out = [
        "# Backward-speed benchmark",
        "",
        "Generated by `make bench` (`python -m mesimp_lib bench --json benchmarks/results.json "
        "--markdown benchmarks/RESULTS.md`); do not edit by hand.",
        "",
        f"- machine: {env['cpu']}, {env['cpu_count']} cores, CPU kernels {env['cpu_capability']}",
        f"- torch {env['torch']}, Python {env['python']}, commit {env['commit']}",
        f"- allocator settings: {env['malloc_env'] or 'glibc defaults (no MALLOC_* variables)'}",
        "- method: one process, dense and meProp interleaved A-B-B-A, ratio per round, median over rounds, "
        "3 warm-up calls; backward alone via `torch.autograd.grad` on a graph built once; "
        "correctness (input and weight gradient vs a masked dense reference) checked in the same run.",
        "- dense = PyTorch's `F.linear` autograd; meProp = `MePropLinear` (stats on, the default dense weight "
        "gradient through autograd, which any optimizer takes; rows marked *sparse dW* return the row-sparse "
        "gradient of the selected rows instead, which SGD and the lazy optimizers take). `limit n/k` is the FLOP limit of "
        "the two backward products.",
        *_removed_buffer_note(res),
        "",
        *targets_markdown(res.get("targets") or []),
        "## One square layer (n -> n)",
        "",
        "| mode | kernel | threads | batch | n | k | k/n | dense ms | meProp ms | speedup over dense | limit n/k | "
        "speedup over masked dense | correct |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["layer"]:
        vm = r.get("speedup_vs_masked")
        out.append(
            f"| {r['mode']}{_LAYER_DW.get(r.get('weight_grad'), '')} | {r.get('kernel', 'torch')} | "
            f"{r['threads']} | "
            f"{r['batch']} | {r['n']} | {r['k']} | {100 * r['k_frac']:.0f}% | "
            f"{r['dense_ms']:.3f} | {r['meprop_ms']:.3f} | **{r['speedup']:.2f}x** | {r['limit']:.0f} | "
            f"{'-' if vm is None else f'{vm:.2f}x'} | {'yes' if r['correct'] else 'NO'} |"
        )
    out += [
        "",
        "Per-example rows: meProp picks each example's own top-k, so a mini-batch touches the union of "
        "their rows. The layer runs the products on that union's columns when it is at most half the width "
        "(compaction) and on the masked gradient otherwise; *masked dense* is the same layer forced to the "
        "masked path (`compact_threshold=0`). Kernel `torch` = the pure-PyTorch backward; `fused` = the native "
        "kernels of `mesimp_lib.fused` (unified: column sums, top-k and both products over the selected rows "
        "read in place, in one call).",
    ]
    out += [
        "",
        "## The paper's MNIST MLP, whole backward (784-500-500-10, k=20 on both hidden layers, output dense)",
        "",
        "Kernel `torch` = the pure-PyTorch backward, `fused` = the native C++ kernels of `mesimp_lib.fused` "
        "called from the Python autograd function, `native` = every layer `MePropLinear(kernel=\"native\")`, "
        "which the MLP runs as ONE C++ autograd node (forward and the whole backward, no Python in either) "
        f"(status in this run: {env.get('meprop_kernels', 'not recorded')}); weight gradient `dense` = the "
        "default dense gradient through autograd, which any optimizer takes, `sparse` = a row-sparse gradient of the selected rows "
        "(for SGD / the lazy optimizers). The limit is the ratio of multiply-adds of the whole backward "
        "(the first layer needs no dx; the dense output layer counts in both).",
        "",
        "Two measurements, each dense against meProp interleaved A-B-B-A: **`loss.backward()`** = a training "
        "step's backward (cross-entropy's nodes, the model, the gradients accumulated into `.grad`); "
        "**model backward** = `torch.autograd.grad(out, params, g)` from the output gradient on a graph built "
        "once, the model's layers alone (no loss nodes, no accumulation into `.grad`), as `PERFORMANCE.md` prescribes for "
        "layers. The paper timed the linear parts alone, closest to the second.",
        "",
        "| mode | kernel | weight grad | batch | k | dense ms | meProp ms | speedup, `loss.backward()` | "
        "dense ms | meProp ms | speedup, model backward | FLOP limit (whole backward) | limit n/k (hidden layers) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["mlp"]:
        gcols = _grad_cols(r, "grad_meprop_ms")
        out.append(
            f"| {r['mode']} | {r.get('kernel', 'torch')} | {_weight_grad_label(r)} | {r['batch']} | "
            f"{r['k']} | {r['dense_ms']:.3f} | {r['meprop_ms']:.3f} | **{r['speedup']:.2f}x** | {gcols} | "
            f"{r.get('limit_backward', _mlp_backward_limit(r['k'])):.1f} | {r['limit']:.0f} |"
        )
    if res.get("floor"):
        out += [
            "",
            "**The floor at these shapes.** The same dense backward against a `loss.backward()` whose model is ONE "
            f"backward node ({res['floor'][0].get('node', 'Python')}) that does no work and returns no gradient "
            "(the loss's nodes and the autograd engine only). No meProp backward measured through "
            "`loss.backward()` can beat this ratio, whatever its kernels: it still has to compute six gradients "
            "and hand them to the parameters.",
            "",
            "The same for the model backward (`torch.autograd.grad(out, params, g)` with the no-work node as "
            "the model): the ceiling of the model-backward column.",
            "",
            "| batch | dense ms | no-work node ms | ratio (the ceiling), `loss.backward()` | dense ms | "
            "no-work node ms | ratio (the ceiling), model backward |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in res["floor"]:
            gcols = _grad_cols(r, "grad_floor_ms")
            out.append(f"| {r['batch']} | {r['dense_ms']:.3f} | {r['floor_ms']:.3f} | **{r['speedup']:.2f}x** | "
                       f"{gcols} |")
    if res.get("step"):
        out += [
            "",
            "## The paper's MNIST MLP, whole training step (forward + loss + backward + optimizer), k=20",
            "",
            "Against dense + `torch.optim.Adam(fused=True)` (the paper's unmodified optimizer, PyTorch's fastest "
            "CPU implementation). *lazy Adam* (`mesimp_lib.lazy.LazyAdam`) updates only the rows with a gradient "
            "and freezes idle rows and their moments: **not the paper's optimizer** (its accuracy cost: see the "
            "lazy-optimizer runs). *in backward* = `NativeMLP.step_in_backward(opt)`: the whole network is one native "
            "autograd node and the same lazy update (bit-equal) is applied inside its backward, row by row, the "
            "gradient never stored; its loop is forward + `loss.backward()`, with no `zero_grad()` / `step()` "
            "left to call. Denormals flushed, as in `train()`. Interleaved A-B-B-A in blocks of about 20 ms "
            "(some ten steps of one variant in a row, a steady state as in training). The FLOP limit counts "
            "forward + backward multiply-adds, not the optimizer's work, which dense Adam does in full: only a "
            "variant whose optimizer shrinks can beat it. Section times are medians of each variant timed alone.",
            "",
            "| variant | mode | batch | dense ms | meProp ms | speedup | FLOP limit (fwd + bwd) | "
            "fwd / bwd / optimizer ms (dense) | fwd / bwd / optimizer ms (variant) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["step"]:
            sec = r.get("sections") or {}

            def split(name):
                d = sec.get(name)
                return "-" if not d else f"{d['forward_ms']:.3f} / {d['backward_ms']:.3f} / {d['optimizer_ms']:.3f}"

            out.append(
                f"| {r['variant']} | {r['mode']} | {r['batch']} | {r['dense_ms']:.3f} | {r['meprop_ms']:.3f} | "
                f"**{r['speedup']:.2f}x** | {r['limit_fwd_bwd']:.1f} | {split('dense')} | {split('meprop')} |"
            )
    if res.get("lstm"):
        out += ["", "## LSTM step at the POS tagger's shapes (h=500, embedding 100, one direction)", ""]
        out += [
            "`MePropLSTM` (per-example top-k per gate, its default kernel) against two dense baselines: "
            "`torch.nn.LSTM` (PyTorch's own fused kernels) and `MePropLSTM` with k=None (the same Python "
            "time loop with nothing cut, which isolates what the top-k saves); forward + backward of one "
            "direction. The paper's POS setting is batch 1 (one sentence); our tagger trains on 32.",
            "",
            "| dense baseline | batch | tokens per sentence | k per gate | dense ms | meProp ms | speedup | "
            "FLOP limit (fwd + bwd) | limit h/k (backward) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["lstm"]:
            out.append(f"| {r.get('baseline', 'nn.LSTM')} | {r['batch']} | {r['steps']} | {r['k']} | "
                       f"{r['dense_ms']:.2f} | {r['meprop_ms']:.2f} | **{r['speedup']:.2f}x** | "
                       f"{r['limit_fwd_bwd']:.1f} | {r['limit_backward']:.0f} |")
    if res.get("inference"):
        out += [
            "",
            "## Inference of meSimp-simplified MNIST models",
            "",
            "Measured in this run (`experiments.measure_inference`, 1 thread, `torch.no_grad`, plain "
            "`nn.Sequential` exports): each saved meSimp model of `data/results/mesimp_mnist` against a "
            "784-500-500-10 network, interleaved A-B-B-A in one process, median of the per-round ratios; batch 1 "
            "= the first 1,000 test images one at a time, batch 1000 = all 10,000 test images (ms per pass "
            "over them). The limit is 1 / parameter ratio.",
            "",
            "| model | hidden widths | parameter ratio | batch | original ms | simplified ms | speedup | limit |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in res["inference"]:
            out.append(f"| {r['model']} | {r['widths']} | {r['param_ratio']:.3f} | {r['batch']} | "
                       f"{r['original_ms']:.1f} | {r['simplified_ms']:.1f} | **{r['speedup']:.2f}x** | "
                       f"{r['limit']:.2f} |")
    return "\n".join(out) + "\n"


def run_cli(args) -> int:
    res = run_benchmark(quick=args.quick, scale=args.rounds_scale)
    if args.json:
        write_json_atomic(args.json, res)
        print(f"wrote {args.json}")
    if args.markdown:
        text = to_markdown(res)
        write_atomic(args.markdown, lambda f: f.write(text))
        print(f"wrote {args.markdown}")
    bad = [r for r in res["layer"] + res["targets"] if not r["correct"]]
    if bad:
        print(f"error: {len(bad)} benchmark rows gave wrong gradients")
        return 1
    return 0
