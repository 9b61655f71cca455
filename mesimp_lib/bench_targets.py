"""Issue 16's speed targets: four layer shapes, each against dense ``nn.Linear`` (the ratio), its FLOP
limit and a naive masked top-k backward written in plain PyTorch (the baseline a reader would write first).

Measured as ``bench_cases.bench_layer`` measures (one process, A-B-B-A, median of per-round ratios, backward
alone via ``torch.autograd.grad`` on a graph built once, 1 thread), with the correctness check of the
same run: the layer's input and weight gradients against the naive masked backward's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bench_timing import abba, keeps_threads
from .meprop import MePropLinear, select_per_example, select_unified

__all__ = ["TARGETS", "bench_target", "masked_linear", "run_targets", "targets_markdown", "topk_mask"]

# (what, batch, in, out, k, mode, layer options beyond the defaults, target speedup over dense)
# "the fastest documented layer": kernel="fused" with the row-sparse weight gradient, the fastest
# one-layer variant of the stored benchmark (for SGD and the lazy optimizers, not Adam)
FASTEST = {"kernel": "fused", "weight_grad": "sparse"}
TARGETS = (
    ("default layer, paper's per-example shape", 10, 784, 500, 20, "per_example", {}, 1.0),
    ("default layer, unified", 32, 2048, 2048, 20, "unified", {}, 10.0),
    ("fastest layer, unified", 32, 8192, 8192, 82, "unified", FASTEST, 60.0),
    ("fastest layer, unified", 256, 4096, 4096, 41, "unified", FASTEST, 40.0),
)


class _MaskedTopK(torch.autograd.Function):
    """The naive masked backward: the full output gradient, all but the top-k zeroed, then the dense products
    (the bias keeps its full gradient, as ``MePropLinear`` does by default)."""

    @staticmethod
    def forward(ctx, x, weight, bias, k, mode):
        ctx.save_for_backward(x, weight)
        ctx.k, ctx.mode = k, mode
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        gk = g * topk_mask(g, ctx.k, ctx.mode)
        return gk @ weight, gk.t() @ x, g.sum(0), None, None  # the bias keeps its full gradient (the default)


def topk_mask(g: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    """1 where meProp keeps an entry of the output gradient ``g`` (top-k by magnitude: per row for
    "per_example", one set of columns for "unified"), else 0: the masked reference of every benchmark."""
    if mode == "unified":
        return torch.zeros_like(g).index_fill_(1, select_unified(g, k), 1.0)
    return torch.zeros_like(g).scatter_(1, select_per_example(g, k), 1.0)


def masked_linear(x, weight, bias, k: int, mode: str):
    """``F.linear`` whose backward is the naive masked top-k (``mode``: "per_example" or "unified")."""
    return _MaskedTopK.apply(x, weight, bias, k, mode)


@keeps_threads
def bench_target(batch: int, n_in: int, n_out: int, k: int, mode: str, options: dict, scale: float = 1.0,
                 seed: int = 0) -> dict:
    """One target row: dense ``nn.Linear`` vs ``MePropLinear(n_in, n_out, k=k, mode=mode, **options)`` vs the
    naive masked backward, all with a bias, gradients w.r.t. the input, weight and bias."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n_in, generator=gen, requires_grad=True)
    layer = MePropLinear(n_in, n_out, k=k, mode=mode, **options)
    dense = torch.nn.Linear(n_in, n_out)
    dense.load_state_dict(layer.state_dict())
    w, b = dense.weight, dense.bias
    g = torch.randn(batch, n_out, generator=gen)
    y_dense, y_layer, y_masked = dense(x), layer(x), masked_linear(x, w, b, k, mode)

    def grads(y, params):
        return lambda: torch.autograd.grad(y, (x, *params), g, retain_graph=True)

    run_layer, run_dense = grads(y_layer, (layer.weight, layer.bias)), grads(y_dense, (w, b))
    ratio, td, ts, rounds = abba(run_dense, run_layer, 7, scale)
    vs_masked, tm, _, _ = abba(grads(y_masked, (w, b)), run_layer, 7, scale)
    # a layer that returns a dense [out, in] weight gradient must at least allocate and zero it: the speedup
    # of a backward that did only that is the most any such layer can reach (the "dense-dW cap")
    cap, _, tz, _ = abba(run_dense, lambda: torch.zeros(n_out, n_in), 7, scale)
    ref = torch.autograd.grad(y_masked, (x, w, b), g, retain_graph=True)
    got = [t.to_dense() if t.is_sparse else t for t in run_layer()]
    ok = all(torch.allclose(a, r, rtol=1e-4, atol=1e-4) for a, r in zip(got, ref))
    return {"batch": batch, "n_in": n_in, "n": n_out, "k": k, "k_frac": k / n_out, "mode": mode, "threads": 1,
            "kernel": layer.kernel, "weight_grad": layer.weight_grad, "dense_ms": td * 1e3, "meprop_ms": ts * 1e3,
            "masked_ms": tm * 1e3, "speedup": ratio, "speedup_vs_masked": vs_masked, "limit": n_out / k,
            "zero_dw_ms": tz * 1e3, "dense_dw_cap": cap, "rounds": rounds, "correct": bool(ok)}


def run_targets(scale: float = 1.0, progress=print) -> list[dict]:
    rows = []
    for what, batch, n_in, n_out, k, mode, options, target in TARGETS:
        row = {"what": what, "target": target, **bench_target(batch, n_in, n_out, k, mode, options, scale)}
        row["met"] = row["correct"] and row["speedup"] >= target
        rows.append(row)
        progress(f"target {what} batch {batch} {n_in}->{n_out} k={k} {row['kernel']}/{row['weight_grad']}: "
                 f"{row['speedup']:.2f}x (target {target:g}x, limit {row['limit']:.0f}x, vs masked "
                 f"{row['speedup_vs_masked']:.2f}x, dense-dW cap {row['dense_dw_cap']:.2f}x) "
                 f"{'ok' if row['correct'] else 'WRONG'}")
    return rows


def targets_markdown(rows: list[dict]) -> list[str]:
    """The "issue 16 targets" section of RESULTS.md (empty for a results file without it)."""
    if not rows:
        return []
    out = [
        "## Issue 16 targets (one layer's backward, 1 thread)",
        "",
        "`MePropLinear(in, out, k=k, mode=mode, **options)` with a bias, gradients w.r.t. input, weight and bias, "
        "against dense `nn.Linear` (*speedup*) and against a naive masked top-k backward in plain PyTorch "
        "(`mesimp_lib.bench_targets.masked_linear`: the full output gradient, all but the top-k zeroed, then "
        "the dense products; *vs masked*). *default* = no options (the library's default at the commit measured: "
        "the kernel column says which; weight gradient `dense`, the one every optimizer takes); "
        "*fastest* = `kernel=\"fused\", weight_grad=\"sparse\"` (row-sparse gradient: SGD and the lazy "
        "optimizers take it, Adam does not). Limit = out/k, the FLOP limit of the two backward products. "
        "*Dense-dW cap* = dense backward time / the time of `torch.zeros(out, in)` alone, measured the same "
        "way: no layer that returns a fresh dense weight gradient can be faster than that.",
        "",
        "| row | mode | kernel / weight grad | batch | in -> out | k | target | measured | FLOP limit | "
        "dense-dW cap | dense ms | meProp ms | masked ms | zeros ms | vs masked | correct | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['what']} | {r['mode']} | {r['kernel']} / {r['weight_grad']} | {r['batch']} | "
            f"{r['n_in']} -> {r['n']} | {r['k']} | >= {r['target']:g}x | **{r['speedup']:.2f}x** | "
            f"{r['limit']:.0f}x | {_cap(r)} | {r['dense_ms']:.3f} | {r['meprop_ms']:.3f} | {r['masked_ms']:.3f} | "
            f"{_ms(r.get('zero_dw_ms'))} | {r['speedup_vs_masked']:.2f}x | {'yes' if r['correct'] else 'NO'} | {'yes' if r['met'] else 'no'} |")
    return out + [""]


def _cap(row: dict) -> str:
    """The dense-dW cap of a row (only rows with a dense weight gradient have one; older results lack it)."""
    cap = row.get("dense_dw_cap")
    return "-" if cap is None or row["weight_grad"] != "dense" else f"{cap:.1f}x"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"
