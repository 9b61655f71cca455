"""Self-checks for 08_dependency_parsing.ipynb (each returns a Feedback; none raises on a wrong answer)."""

from __future__ import annotations

from . import Feedback

__all__ = ["check_exercise_1", "check_exercise_2", "check_exercise_3"]


def check_exercise_1(sentence, n_transitions: int) -> Feedback:
    """``sentence``: the treebank sentence you stepped through; ``n_transitions``: your count."""
    from ..tasks.parser import oracle_steps

    fb = Feedback("08 exercise 1")
    truth = len(oracle_steps(sentence))
    n = len(sentence)
    fb.check(n_transitions == truth, f"{truth} transitions", f"{n_transitions!r}: the oracle takes {truth}")
    fb.check(truth == 2 * n, f"= 2n for n = {n} words: each word is shifted once and attached once",
             f"{truth} is not 2n = {2 * n}")
    return fb


def check_exercise_2(sentence) -> Feedback:
    """``sentence``: a non-projective sentence (e.g. ``nonproj[0]``); the check runs the oracle."""
    from ..tasks.parser import is_projective, oracle_steps

    fb = Feedback("08 exercise 2")
    if not fb.check(not is_projective(sentence.heads), "the sentence is non-projective (it has crossing arcs)",
                    "this sentence is projective: take one of nonproj"):
        return fb
    try:
        oracle_steps(sentence)
        fb.check(False, "", "oracle_steps returned transitions for a non-projective tree: that is a bug")
    except ValueError as e:
        fb.check(True, f"oracle_steps raises ValueError ({e}): arc-standard cannot build crossing arcs", "")
    return fb


def check_exercise_3(runs: dict) -> Feedback:
    """``runs``: {label: result of train(...)} for the live run and your variants (at least two)."""
    fb = Feedback("08 exercise 3")
    ok = isinstance(runs, dict) and len(runs) >= 2 and all("best_dev_acc" in r for r in runs.values())
    if fb.check(ok, "several live runs", "pass {label: train(...) result} for at least two runs"):
        uas = {label: 100 * r["best_dev_acc"] for label, r in runs.items()}
        spread = max(uas.values()) - min(uas.values())
        fb.check(True, "dev UAS " + ", ".join(f"{k} {v:.2f}" for k, v in uas.items())
                 + f": a spread of {spread:.2f} points; on 1,000 sentences and one epoch, compare it with the "
                 "change from another seed before reading anything into it", "")
    return fb
