"""Self-checks for 06_meact.ipynb (each returns a Feedback; none raises on a wrong answer)."""

from __future__ import annotations

from . import Feedback

__all__ = ["check_exercise_1", "check_exercise_2"]


def _counts(fb: Feedback, name: str, value, width: int = 500) -> bool:
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, (int, float)) and 0 <= v <= width for v in value))
    return fb.check(ok, f"{name}: {list(value)} active units per example (layer 1, layer 2)",
                    f"{name}={value!r}: pass ma['meact']['active_units_per_example'], two numbers in 0..{width}")


def check_exercise_1(counts: dict) -> Feedback:
    """``counts``: {threshold: ma["meact"]["active_units_per_example"]} for your live runs
    (at least two thresholds, e.g. 0.5, 1.0 and 2.0)."""
    fb = Feedback("06 exercise 1")
    if not fb.check(isinstance(counts, dict) and len(counts) >= 2, "runs at several thresholds",
                    "pass a dict {threshold: active units per example} with at least two thresholds"):
        return fb
    if all(_counts(fb, f"threshold {t}", c) for t, c in sorted(counts.items())):
        ts = sorted(counts)
        for layer in (0, 1):
            seq = [counts[t][layer] for t in ts]
            fb.check(all(a >= b for a, b in zip(seq, seq[1:])),
                     f"layer {layer + 1}: a larger threshold leaves fewer (or as many) active units: {seq}",
                     f"layer {layer + 1}: {seq} is not falling as the threshold grows: are the runs labelled "
                     "with the threshold they used?")
    return fb


def check_exercise_2(max_ratio: list, share: list) -> Feedback:
    """``max_ratio``: active units per example with meact_statistic="max_ratio",
    meact_threshold=0.1; ``share``: the same with the default share rule (threshold 1.0)."""
    fb = Feedback("06 exercise 2")
    if _counts(fb, "max_ratio 0.1", max_ratio) and _counts(fb, "share 1.0", share):
        more = [m >= s for m, s in zip(max_ratio, share)]
        fb.check(True, "per layer, the max-ratio rule keeps " + ", ".join(
            f"{'more' if mo else 'fewer'} units ({m} vs {s})" for mo, m, s in zip(more, max_ratio, share))
            + " than the share rule; which is looser depends on how unevenly an example spreads its gradient",
            "")
    return fb
