"""Self-checks for ``01_meprop_step_through.ipynb``."""

from __future__ import annotations

import torch

from . import Feedback
from ._common import first_unanswered

__all__ = ["check_exercise_1", "check_exercise_2", "check_exercise_3"]


def check_exercise_1(g: torch.Tensor, g_k: torch.Tensor, k: int) -> Feedback:
    """Exercise 1: Step 2 rerun with ``k = 6`` (the full width)."""
    fb = Feedback("01, exercise 1")
    width = g.shape[1]
    fb.check(k >= width, f"k={k} is the full width {width}", f"k={k}: set k = {width}, the full width")
    n = int((g_k != g).sum())
    fb.check(torch.equal(g_k, g), "g_k equals g: nothing is dropped",
             f"g_k differs from g in {n} entr{'y' if n == 1 else 'ies'}: with k = width every entry is kept")
    return fb


def check_exercise_2(dense_macs: int | None, meprop_macs: int | None, batch: int = 10, n_in: int = 784, n_out: int = 500,
                     k: int = 20) -> Feedback:
    """Exercise 2: backward multiply-adds (dx and dW) of one layer, dense and meProp."""
    fb = Feedback("01, exercise 2")
    if first_unanswered(fb, dense_macs=dense_macs, meprop_macs=meprop_macs):
        return fb
    want_dense, want_meprop = 2 * batch * n_out * n_in, 2 * batch * k * n_in
    fb.check(dense_macs == want_dense, f"dense: {want_dense:,} (dx and dW: B*out*in each)",
             f"dense: {dense_macs:,} is not it; count B*out*in for dx and again for dW")
    fb.check(meprop_macs == want_meprop, f"meProp: {want_meprop:,} (B*k*in each)",
             f"meProp: {meprop_macs:,} is not it; only k of the out columns take part")
    if dense_macs == want_dense and meprop_macs == want_meprop:
        fb.lines.append(f"  ratio {dense_macs // meprop_macs} = out / k")
    return fb


def check_exercise_3(G: torch.Tensor, per_example_rows: int | None, unified_rows: int | None) -> Feedback:
    """Exercise 3: rows touched by per-example and by unified selection with k = 1 on ``G``."""
    fb = Feedback("01, exercise 3")
    if first_unanswered(fb, per_example_rows=per_example_rows, unified_rows=unified_rows):
        return fb
    pe = len(set(G.abs().argmax(1).tolist()))
    fb.check(per_example_rows == pe, f"per example: {pe} distinct rows (the union of each example's choice)",
             f"per example: {per_example_rows} is not it; count the distinct indices of select_per_example(G, 1)")
    fb.check(unified_rows == 1, "unified: exactly 1 row, shared by the whole batch",
             f"unified: {unified_rows} is not it; unified always touches exactly k rows")
    return fb
