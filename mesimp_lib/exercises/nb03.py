"""Self-checks for ``03_random_vs_topk.ipynb``."""

from __future__ import annotations

from . import Feedback
from ._common import find_run, first_unanswered, points, unanswered

__all__ = ["check_exercise_1", "check_exercise_2", "check_exercise_3"]


def _gap(results: dict, optimizer: str, k: int) -> float | None:
    top = find_run(results, optimizer, method="meprop", k=k)
    rnd = find_run(results, optimizer, method="random", k=k, rescale=False)
    return None if top is None or rnd is None else top[1]["test_acc"] - rnd[1]["test_acc"]


def check_exercise_1(results: dict, shrinks: bool | None, optimizer: str = "sgd") -> Feedback:
    """Exercise 1: ``results`` holding top-k and (unscaled) random-k runs at k=20 and at k=100 with ``optimizer``;
    ``shrinks`` is your answer to "does the gap between top-k and random-k shrink at k=100?"."""
    fb = Feedback("03, exercise 1")
    g20, g100 = _gap(results, optimizer, 20), _gap(results, optimizer, 100)
    if not fb.check(g20 is not None and g100 is not None, f"top-k and random-k at k=20 and k=100 ({optimizer})",
                    f"results need method='meprop' and method='random' runs at k=20 and k=100 with "
                    f"optimizer={optimizer!r}"):
        return fb
    if unanswered(fb, shrinks, "shrinks (True or False)"):
        return fb
    truth = abs(g100) < abs(g20)
    fb.check(shrinks == truth,
             f"right: top-k minus random-k is {points(g20)} at k=20 and {points(g100)} at k=100",
             f"look again: top-k minus random-k is {points(g20)} at k=20 and {points(g100)} at k=100")
    return fb


def check_exercise_2(scale: float | None, k: int = 20, width: int = 500) -> Feedback:
    """Exercise 2: the factor by which unscaled random-k shrinks the expected gradient."""
    fb = Feedback("03, exercise 2")
    if unanswered(fb, scale, "scale (a number)"):
        return fb
    fb.check(abs(scale - k / width) < 1e-9, f"E[g_rand] = (k/n) g = {k / width:g} g: each entry survives with "
             "probability k/n; SGD's step shrinks by the same factor, Adam's normalisation largely undoes it",
             f"{scale:g} is not it: with what probability is one given entry among the k kept, and what is "
             "the kept gradient's expected value then?")
    return fb


def check_exercise_3(params_h20: int | None, params_500: int | None) -> Feedback:
    """Exercise 3: parameters of the dense h=20 network and of the 784-500-500-10 network."""
    fb = Feedback("03, exercise 3")
    if first_unanswered(fb, params_h20=params_h20, params_500=params_500):
        return fb

    def count(h: int) -> int:
        return 784 * h + h + h * h + h + h * 10 + 10

    for name, got, h in (("h=20", params_h20, 20), ("784-500-500-10", params_500, 500)):
        fb.check(got == count(h), f"{name}: {count(h):,} parameters",
                 f"{name}: {got:,} is not it; count weights and biases of all three layers")
    return fb
