"""Self-checks for 05_mesimp.ipynb (each returns a Feedback; none raises on a wrong answer)."""

from __future__ import annotations

from . import Feedback

__all__ = ["check_exercise_1", "check_exercise_2", "check_exercise_3"]


def _event(fb: Feedback, event) -> bool:
    return fb.check(isinstance(event, dict) and {"removed", "widths"} <= set(event),
                    "an event of simp.prune(opt)", "pass the dict that simp.prune(opt) returned")


def check_exercise_1(event) -> Feedback:
    """``event``: what ``simp.prune(opt)`` returned with ``prune_rate=0.0`` (Step 1's model)."""
    fb = Feedback("05 exercise 1")
    if _event(fb, event):
        fb.check(all(r == 0 for r in event["removed"]), f"nothing removed: {event['removed']}",
                 f"removed {event['removed']}: with prune_rate=0.0 the threshold floor(0 * seen) is 0")
        fb.check(list(event["widths"]) == list(event.get("widths_before", event["widths"])),
                 f"widths unchanged: {event['widths']}", f"the widths changed to {event['widths']}")
    return fb


def check_exercise_2(event) -> Feedback:
    """``event``: ``simp.prune(opt)`` with ``prune_rate=1.0`` and ``min_units=2``."""
    fb = Feedback("05 exercise 2")
    if _event(fb, event):
        fb.check(list(event["widths"]) == [2, 2], "widths [2, 2]: min_units kept two units per layer",
                 f"widths {event['widths']}: did you pass min_units=2 and prune_rate=1.0?")
        fb.check(list(event.get("kept_minimum", [])) == [True, True],
                 "kept_minimum [True, True]: the rule alone would have emptied both layers",
                 f"kept_minimum is {event.get('kept_minimum')}: expected [True, True]")
    return fb


def check_exercise_3(n_params: int, widths=None) -> Feedback:
    """``n_params``: your count of the exported model's parameters (``widths``: its widths,
    optional). The check loads the stored model itself and counts."""
    from ..experiments import results_dir
    from ..checkpoint import load_model

    fb = Feedback("05 exercise 3")
    path = results_dir("mesimp_mnist") / "mesimp-k160-s1.pt"
    if not fb.check(path.exists(), f"{path.name} is stored", f"{path} is missing: run the mesimp_mnist suite"):
        return fb
    m = load_model(path)
    truth = sum(p.numel() for p in m.to_sequential().parameters())
    fb.check(n_params == truth, f"{truth:,} parameters (widths {m.widths})",
             f"{n_params!r} is not the count: sum p.numel() over m.to_sequential().parameters()")
    if widths is not None:
        fb.check(list(widths) == list(m.widths), f"widths {m.widths}", f"widths {widths} differ from {m.widths}")
    return fb
