"""Self-checks for ``10_why_topk_stumbles_with_adam.ipynb``."""

from __future__ import annotations

import torch

from . import Feedback
from ._common import unanswered
from ..diagnostics import sign_coherence

__all__ = ["check_exercise_1", "check_exercise_2"]


def check_exercise_1(g_k: torch.Tensor, h: torch.Tensor, coherence: float | None) -> Feedback:
    """Exercise 1: the mean sign coherence of the weight-gradient rows fed by two or more examples, for the
    kept gradient ``g_k`` (N, out) and the layer input ``h`` (N, in)."""
    fb = Feedback("10, exercise 1")
    if unanswered(fb, coherence, "coherence (a number)"):
        return fb
    rows = (g_k != 0).sum(0) >= 2
    if not fb.check(bool(rows.any()), f"{int(rows.sum())} rows are fed by two or more examples",
                    "no row is fed by two or more examples in this g_k"):
        return fb
    want = float(sign_coherence(g_k[:, rows].T @ h).nanmean())
    fb.check(abs(coherence - want) < 5e-4, f"{want:.3f}: examples may now disagree in sign, so it can fall below 1",
             f"{coherence:.3f} is not it; take the rows with (g_k != 0).sum(0) >= 2 and "
             "sign_coherence(g_k[:, rows].T @ h).nanmean()")
    return fb


def check_exercise_2(ratio: float | None) -> Feedback:
    """Exercise 2: Adam's second step divided by lr, when the second gradient has the first one's sign and is
    100 times smaller (default betas, from a fresh state)."""
    fb = Feedback("10, exercise 2")
    if unanswered(fb, ratio, "ratio (a number)"):
        return fb
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-3)
    for grad in (1.0, 0.01):
        w.grad = torch.tensor([grad], dtype=torch.float64)
        before = w.detach().clone()
        opt.step()
    want = float((before - w.detach()).abs() / 1e-3)
    fb.check(abs(ratio - want) < 5e-3, f"{want:.3f}: a gradient 100 times smaller still moves the weight by "
             f"{want:.2f} lr", f"{ratio:.3f} is not it; run two Adam steps (gradients 1 and 0.01) and divide the "
             "second step by lr")
    return fb
