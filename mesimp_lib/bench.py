"""Backward-speed benchmark (``python -m mesimp_lib bench``, ``make bench``): the grid of PERFORMANCE.md run
in one process, its rows written as JSON and as ``benchmarks/RESULTS.md``.

The cases measured are in ``bench_cases``, the timing method (A-B-B-A, medians of per-round ratios) and the
FLOP limits in ``bench_timing``, issue 16's target rows in ``bench_targets``, the Markdown in
``bench_markdown``; their public names are re-exported here.
"""

from __future__ import annotations

import os

import torch

from .bench_cases import (STEP_VARIANTS, bench_backward_floor, bench_inference, bench_layer, bench_lstm, bench_mlp,
                          bench_step)
from .bench_markdown import to_markdown
from .bench_targets import run_targets
# viz.figures reads the MLP's FLOP limits from here (for result files written before they were stored)
from .bench_timing import mlp_backward_limit as _mlp_backward_limit, mlp_step_limit as _mlp_step_limit  # noqa: F401
from .files import write_atomic
from .results import environment, write_json_atomic

__all__ = ["bench_backward_floor", "bench_inference", "bench_layer", "bench_lstm", "bench_mlp", "bench_step",
           "run_benchmark", "to_markdown"]


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
            for kernel in ("torch", "fused") if fused_ok else ("torch",):  # the reference; the default's kernel
                row = bench_layer(b, n, max(1, round(f * n)), "per_example", 1, scale, kernel=kernel)
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
