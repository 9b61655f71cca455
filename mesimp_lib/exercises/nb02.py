"""Self-checks for ``02_training_with_meprop.ipynb``."""

from __future__ import annotations

from . import Feedback
from ._common import first_unanswered, pct, unanswered

__all__ = ["check_exercise_1", "check_exercise_2", "check_exercise_3"]


def _rows(result: dict) -> tuple[list[float], list[float]]:
    rows = result["rows"]
    if not rows["with_grad"]:
        raise ValueError("this result has no rows measurement: train with rows_every > 0 (small sets rows_every=10)")
    return rows["with_grad"], rows["changed"]


def check_exercise_1(result: dict | None) -> Feedback:
    """Exercise 1: the unified k=10 run; every layer's rows with a gradient is exactly k / 500."""
    fb = Feedback("02, exercise 1")
    if unanswered(fb, result, "unified_run = train(...) (the run of the exercise)"):
        return fb
    c = result["config"]
    fb.check(c["mode"] == "unified" and c["k"] == 10, "a unified k=10 run",
             f"this run has mode={c['mode']!r}, k={c['k']}: train mode='unified', k=10")
    with_grad, _ = _rows(result)
    want = c["k"] / 500 if isinstance(c["k"], int) else None
    fb.check(want is not None and all(abs(w - want) < 1e-4 for w in with_grad),
             f"rows with a gradient per layer: {', '.join(pct(w) for w in with_grad)} = k / 500 exactly",
             f"rows with a gradient per layer: {', '.join(pct(w) for w in with_grad)}")
    return fb


def check_exercise_2(result: dict | None) -> Feedback:
    """Exercise 2: the AdaGrad cell rerun with ``optimizer="adam"``."""
    fb = Feedback("02, exercise 2")
    if unanswered(fb, result, "adam_run = train(...) (the run of the exercise)"):
        return fb
    fb.check(result["config"]["optimizer"] == "adam", "an Adam run",
             f"this run used optimizer={result['config']['optimizer']!r}: set optimizer='adam'")
    with_grad, changed = _rows(result)
    fb.check(all(c > w for c, w in zip(changed, with_grad)),
             f"rows changed ({', '.join(pct(c) for c in changed)}) > rows with a gradient "
             f"({', '.join(pct(w) for w in with_grad)}): Adam's moments move rows without a gradient",
             "rows changed is not larger than rows with a gradient in every layer")
    return fb


def check_exercise_3(result_batch10: dict | None, result_batch50: dict, answer: str | None) -> Feedback:
    """Exercise 3: the same run at batch 10 and batch 50; ``answer`` is "up" or "down" (the share of rows with
    a gradient at batch 10 compared with batch 50)."""
    fb = Feedback("02, exercise 3")
    if first_unanswered(fb, batch10_run=result_batch10):
        return fb
    b10, b50 = result_batch10["config"]["batch_size"], result_batch50["config"]["batch_size"]
    if not fb.check(b10 < b50, f"batch {b10} vs batch {b50}", "pass the smaller-batch run first"):
        return fb
    if unanswered(fb, answer, 'answer ("up" or "down")'):
        return fb
    w10, w50 = _rows(result_batch10)[0][0], _rows(result_batch50)[0][0]
    truth = "down" if w10 < w50 else "up"
    fb.check(answer.strip().lower() == truth,
             f"{truth}: {pct(w10)} at batch {b10} vs {pct(w50)} at {b50} (a smaller union of the examples' top-k sets)",
             f"look again: {pct(w10)} at batch {b10} vs {pct(w50)} at batch {b50}")
    return fb
