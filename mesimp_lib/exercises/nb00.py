"""Self-checks for ``00_start_here.ipynb``."""

from __future__ import annotations

import torch

from . import Feedback
from ._common import find_run, pct, unanswered

__all__ = ["check_exercise_1", "check_exercise_2"]


def check_exercise_1(layer, x: torch.Tensor, g: torch.Tensor) -> Feedback:
    """Exercise 1: the tiny layer after ``y.backward(g)``; works at every k. Passes when k reaches the width
    (8): every entry is kept, every row of W gets a gradient and the checkpoint's formulas hold."""
    fb = Feedback("00, exercise 1")
    width = layer.out_features
    idx = layer.stats.last_indices
    if idx is None or x.grad is None or layer.weight.grad is None:
        fb.check(False, "", "run the cell first: build the layer, call y.backward(g), then check")
        return fb
    mask = torch.zeros_like(g)
    if idx.dim() == 1:  # unified: the same columns for every example
        mask[:, idx] = 1.0
    else:
        mask.scatter_(1, idx, 1.0)
    g_k = g * mask
    fb.check(layer.k_effective is None, f"k={layer.k} >= width {width}: an exact dense backward",
             f"k={layer.k} keeps {layer.k_effective} of {width} entries per example; the exercise asks for k=8")
    fb.check(torch.allclose(x.grad, g_k @ layer.weight.detach(), atol=1e-6)
             and torch.allclose(layer.weight.grad, g_k.T @ x.detach(), atol=1e-6),
             "the checkpoint holds: dL/dx = g_k W and dL/dW = g_k^T x",
             "the gradients differ from g_k W / g_k^T x: the library is broken (please report it)")
    rows = int((layer.weight.grad.abs().sum(1) != 0).sum())
    want = int((g_k != 0).any(0).sum())
    fb.check(rows == want == width, f"all {width} rows of W get a gradient",
             f"{rows} of {width} rows get a gradient" + ("" if layer.k_effective is None else
                                                        ": with k < width only the kept entries' rows do"))
    return fb


def check_exercise_2(results: dict, closer: bool | None, optimizer: str = "sgd") -> Feedback:
    """Exercise 2: ``results`` with an added per-example k=100 run (same settings); ``closer`` is your answer to
    "is k=100 closer to dense than k=20?" for the runs with ``optimizer``."""
    fb = Feedback("00, exercise 2")
    dense = find_run(results, optimizer, method="dense")
    k20 = find_run(results, optimizer, method="meprop", k=20, mode="per_example")
    k100 = find_run(results, optimizer, method="meprop", k=100, mode="per_example")
    if not fb.check(k100 is not None, f"a per-example k=100 run with {optimizer} is in results",
                    f"no per-example k=100 run with optimizer={optimizer!r} in results: add "
                    f"TrainConfig(method='meprop', k=100, mode='per_example', optimizer={optimizer!r}, **quick)"):
        return fb
    if not fb.check(dense is not None and k20 is not None, "dense and k=20 runs to compare with",
                    f"results need the dense and per-example k=20 runs with {optimizer}"):
        return fb
    if unanswered(fb, closer, "closer (True or False)"):
        return fb
    acc = {name: r["test_acc"] for name, r in (dense, k20, k100)}
    gap20, gap100 = abs(dense[1]["test_acc"] - k20[1]["test_acc"]), abs(dense[1]["test_acc"] - k100[1]["test_acc"])
    truth = gap100 < gap20
    fb.check(closer == truth,
             f"right: k=100 is {'closer to' if truth else 'not closer to'} dense "
             f"({100 * gap100:.2f} vs {100 * gap20:.2f} points apart)",
             f"look again: k=100 is {100 * gap100:.2f} points from dense, k=20 is {100 * gap20:.2f}")
    fb.lines.append("  " + ", ".join(f"{name}: {pct(a)}" for name, a in acc.items()))
    return fb
