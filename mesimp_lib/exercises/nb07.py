"""Self-checks for 07_lstm_pos_tagging.ipynb (each returns a Feedback; none raises on a wrong answer)."""

from __future__ import annotations

import torch

from . import Feedback

__all__ = ["check_exercise_1", "check_exercise_2", "check_exercise_3"]


def check_exercise_1(s: dict) -> Feedback:
    """``s``: what ``step_backward(..., k=6)`` returned in Step 1 (h = 6 cells, k = every entry)."""
    fb = Feedback("07 exercise 1")
    if not fb.check(isinstance(s, dict) and {"rows", "kept", "dG"} <= set(s), "a step_backward result",
                    "pass the dict that step_backward(...) returned"):
        return fb
    h = s["kept"].shape[1] // 4
    fb.check(len(s["rows"]) == 4 * h, f"all 4h = {4 * h} rows of W_ih / W_hh get a gradient",
             f"{len(s['rows'])} of {4 * h} rows: with k = h = {h} every entry of every gate is kept")
    fb.check(torch.equal(s["kept"], s["dG"]), "s['kept'] equals s['dG']: nothing is cut",
             "s['kept'] differs from s['dG']: was k=6 passed to step_backward?")
    return fb


def check_exercise_2(unified_frac: float, per_example_frac: float) -> Feedback:
    """``unified_frac`` / ``per_example_frac``: ``stats.mean_rows_touched_frac`` of Step 2's layer
    with ``mode="unified"`` and with the default per-example selection (same k)."""
    fb = Feedback("07 exercise 2")
    ok = all(isinstance(v, float) and 0 < v <= 1 for v in (unified_frac, per_example_frac))
    if fb.check(ok, "two fractions in (0, 1]", "pass two values of stats.mean_rows_touched_frac"):
        fb.check(unified_frac < per_example_frac,
                 f"unified touches fewer rows ({unified_frac:.3f} < {per_example_frac:.3f}): every token of a "
                 "step shares one set of 4k rows",
                 f"unified {unified_frac:.3f} is not below per-example {per_example_frac:.3f}: did you set the "
                 "same k for both, and ours.mode = 'unified' for the first?")
    return fb


def check_exercise_3(event: dict) -> Feedback:
    """``event``: what ``simp.prune(opt)`` returned in Step 5 with ``prune_rate=0.0``."""
    fb = Feedback("07 exercise 3")
    if fb.check(isinstance(event, dict) and {"removed", "widths"} <= set(event), "a prune event",
                "pass the dict that simp.prune(opt) returned"):
        fb.check(all(r == 0 for r in event["removed"]), f"nothing removed; widths stay {event['widths']}",
                 f"removed {event['removed']}: floor(0 * seen) = 0, so no cell can be below the threshold")
    return fb
