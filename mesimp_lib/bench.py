"""Backward-speed benchmark, measured as PERFORMANCE.md prescribes.

One process; dense and meProp interleaved A-B-B-A per round; the ratio is taken per round
and the median over rounds is reported; warm-up calls first; correctness is checked in the
same run (meProp's input gradient against a masked dense reference). Backward alone is
timed with ``torch.autograd.grad`` on a graph built once (``retain_graph=True``).

Dense = PyTorch's own ``F.linear`` autograd (the strongest baseline). meProp = a
``MePropLinear`` as users get it (stats on, ``weight_grad="buffer"``: the weight gradient is
written into the layer's persistent buffer, the few rows of the previous step re-zeroed).
"""

from __future__ import annotations

import os
import statistics
import time

import torch
import torch.nn.functional as F

from .meprop import MePropLinear, select_per_example, select_unified
from .results import environment, write_json_atomic

__all__ = ["bench_layer", "bench_mlp", "run_benchmark", "to_markdown"]


def _time_call(fn, inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def _abba(dense_fn, sparse_fn, min_rounds: int, scale: float = 1.0):
    """Median per-round ratio dense/sparse and median times (seconds)."""
    for _ in range(3):  # warm-up
        dense_fn()
        sparse_fn()
    t_est = max(_time_call(dense_fn, 1), 1e-6)
    inner = max(1, int(1e-3 / t_est))  # blocks of >= ~1 ms against timer noise
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


def bench_layer(batch: int, n: int, k: int, mode: str = "unified", threads: int = 1, scale: float = 1.0, seed: int = 0) -> dict:
    """One square layer (n -> n): dense backward vs meProp backward."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, generator=gen, requires_grad=True)
    layer = MePropLinear(n, n, k=k, mode=mode, bias=False)
    w_dense = layer.weight.detach().clone().requires_grad_(True)
    g = torch.randn(batch, n, generator=gen)
    y_dense = F.linear(x, w_dense)
    y_sparse = layer(x)

    def dense():
        torch.autograd.grad(y_dense, (x, w_dense), g, retain_graph=True)

    def sparse():
        layer.weight.grad = None  # as optimizer.zero_grad() does each step
        torch.autograd.grad(y_sparse, (x,), g, retain_graph=True)  # dW goes to the buffer

    ratio, td, ts, rounds = _abba(dense, sparse, 7, scale)
    vs_masked = None
    if mode != "unified":  # per example: also against the plain masked-dense product
        masked = MePropLinear(n, n, k=k, mode=mode, bias=False, compact_threshold=0.0)
        masked.load_state_dict(layer.state_dict())
        y_masked = masked(x)

        def masked_fn():
            masked.weight.grad = None
            torch.autograd.grad(y_masked, (x,), g, retain_graph=True)

        vs_masked, _, _, _ = _abba(masked_fn, sparse, 7, scale)

    # correctness in the same run: input and weight gradients vs a masked dense reference
    layer.weight.grad = None
    (gx,) = torch.autograd.grad(y_sparse, (x,), g, retain_graph=True)
    if mode == "unified":
        mask = torch.zeros_like(g).index_fill_(1, select_unified(g, k), 1.0)
    else:
        mask = torch.zeros_like(g).scatter_(1, select_per_example(g, k), 1.0)
    gk = g * mask
    ok = torch.allclose(gx, gk @ layer.weight.detach(), rtol=1e-4, atol=1e-4) and torch.allclose(
        layer.weight.grad, gk.t() @ x.detach(), rtol=1e-4, atol=1e-4
    )
    return {
        "batch": batch, "n": n, "k": k, "k_frac": k / n, "mode": mode, "threads": threads,
        "dense_ms": td * 1e3, "meprop_ms": ts * 1e3, "speedup": ratio, "limit": n / k,
        "rounds": rounds, "correct": bool(ok), "speedup_vs_masked": vs_masked,
    }


def bench_mlp(batch: int, k: int, mode: str, threads: int = 1, scale: float = 1.0, seed: int = 0) -> dict:
    """The paper's MNIST MLP 784-500-500-10: whole-model backward, dense vs meProp."""
    from .tasks.mnist import MLP

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    sparse = MLP(k=k, mode=mode)
    dense = sparse.to_sequential()  # plain nn.Linear layers, same weights
    x = torch.rand(batch, 784)
    y = torch.randint(0, 10, (batch,))
    loss_d = F.cross_entropy(dense(x), y)
    loss_s = F.cross_entropy(sparse(x), y)

    def run_dense():
        for p in dense.parameters():
            p.grad = None
        loss_d.backward(retain_graph=True)

    def run_sparse():
        for p in sparse.parameters():
            p.grad = None
        loss_s.backward(retain_graph=True)

    ratio, td, ts, rounds = _abba(run_dense, run_sparse, 15, scale)
    return {
        "batch": batch, "n": 500, "k": k, "k_frac": k / 500, "mode": mode, "threads": threads,
        "dense_ms": td * 1e3, "meprop_ms": ts * 1e3, "speedup": ratio, "limit": 500 / k,
        "rounds": rounds, "correct": True, "shape": "784-500-500-10 (whole backward)",
    }


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
        for b, n, f in grid:
            k = max(1, round(f * n))
            row = bench_layer(b, n, k, "unified", 1, scale)
            layer_rows.append(row)
            progress(_line(row))
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
        for b in (10,) if quick else (10, 50):
            for mode in ("per_example", "unified"):
                row = bench_mlp(b, 20, mode, 1, scale)
                mlp_rows.append(row)
                progress(_line(row))
    finally:
        torch.set_num_threads(old_threads)
    env = environment()
    env["torch_threads"] = "per row (1 unless stated)"
    return {"quick": quick, "layer": layer_rows, "mlp": mlp_rows, "environment": env}


def _line(r: dict) -> str:
    what = r.get("shape", f"layer n={r['n']}")
    return (
        f"{what:34s} batch {r['batch']:4d}  k={r['k']:4d} ({100 * r['k_frac']:4.1f}%)  {r['mode']:11s} "
        f"threads {r['threads']}  dense {r['dense_ms']:9.3f} ms  meProp {r['meprop_ms']:8.3f} ms  "
        f"speedup {r['speedup']:6.2f}x  (limit n/k {r['limit']:5.1f})  {'ok' if r['correct'] else 'WRONG'}"
        + (f"  vs masked {r['speedup_vs_masked']:.2f}x" if r.get("speedup_vs_masked") else "")
    )


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
        "- dense = PyTorch's `F.linear` autograd; meProp = `MePropLinear` (stats on, weight gradient in its "
        "row-re-zeroed buffer). `limit n/k` is the FLOP limit of the two backward products.",
        "",
        "## One square layer (n -> n)",
        "",
        "| mode | threads | batch | n | k | k/n | dense ms | meProp ms | speedup over dense | limit n/k | "
        "speedup over masked dense | correct |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["layer"]:
        vm = r.get("speedup_vs_masked")
        out.append(
            f"| {r['mode']} | {r['threads']} | {r['batch']} | {r['n']} | {r['k']} | {100 * r['k_frac']:.0f}% | "
            f"{r['dense_ms']:.3f} | {r['meprop_ms']:.3f} | **{r['speedup']:.2f}x** | {r['limit']:.0f} | "
            f"{'-' if vm is None else f'{vm:.2f}x'} | {'yes' if r['correct'] else 'NO'} |"
        )
    out += [
        "",
        "Per-example rows: meProp picks each example's own top-k, so a mini-batch touches the union of "
        "their rows. The layer runs the products on that union's columns when it is at most half the width "
        "(compaction) and on the masked gradient otherwise; *masked dense* is the same layer forced to the "
        "masked path (`compact_threshold=0`). A fused per-example kernel is future work (see the speed issue).",
    ]
    out += [
        "",
        "## The paper's MNIST MLP, whole backward (784-500-500-10, k=20 on both hidden layers, output dense)",
        "",
        "| mode | batch | dense ms | meProp ms | speedup | limit n/k (hidden layers) |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["mlp"]:
        out.append(
            f"| {r['mode']} | {r['batch']} | {r['dense_ms']:.3f} | {r['meprop_ms']:.3f} | "
            f"**{r['speedup']:.2f}x** | {r['limit']:.0f} |"
        )
    return "\n".join(out) + "\n"


def run_cli(args) -> int:
    res = run_benchmark(quick=args.quick, scale=args.rounds_scale)
    if args.json:
        write_json_atomic(args.json, res)
        print(f"wrote {args.json}")
    if args.markdown:
        from pathlib import Path

        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.markdown).with_suffix(".tmp")
        tmp.write_text(to_markdown(res))
        os.replace(tmp, args.markdown)
        print(f"wrote {args.markdown}")
    bad = [r for r in res["layer"] if not r["correct"]]
    if bad:
        print(f"error: {len(bad)} benchmark rows gave wrong gradients")
        return 1
    return 0
