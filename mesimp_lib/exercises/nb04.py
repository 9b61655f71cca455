"""Self-checks for ``04_dropout_interaction.ipynb``."""

from __future__ import annotations

import statistics

from torch import nn

from . import Feedback
from ._common import first_unanswered, unanswered

__all__ = ["check_exercise_1", "check_exercise_2"]


def check_exercise_1(model, counted: int | None) -> Feedback:
    """Exercise 1: the step-through model rebuilt with ``dropout=0.0`` after its backward; ``counted`` is the
    number of selections you read."""
    fb = Feedback("04, exercise 1")
    fb.check(isinstance(model.dropout, nn.Identity), "a model without dropout",
             "this model still has dropout: build it with dropout=0.0")
    if first_unanswered(fb, counted=counted):
        return fb
    layer = model.hidden[0]
    total = int(layer.stats.counts.sum())
    kept = layer.stats.last_indices.numel()
    fb.check(counted == total, f"{total} selections counted",
             f"{counted} is not it: read int(model.hidden[0].stats.counts.sum()) after the backward")
    fb.check(total <= kept, f"at most B*k = {kept}; {kept - total} selected entries had a zero gradient "
             "(a dropped unit or an inactive ReLU)"
             if total < kept else f"B*k = {kept}: every selected entry had a non-zero gradient",
             f"{total} > B*k = {kept}: the library is broken (please report it)")
    return fb


def check_exercise_2(best_rate: float | None, meprop_helps: bool | None) -> Feedback:
    """Exercise 2: the dropout rate that won on dev in the stored table, and your answer to "is meProp's test
    accuracy at that rate above the dense one by more than the spread?" (read from ``data/results``)."""
    from ..results import load_groups as _load_groups

    fb = Feedback("04, exercise 2")
    if unanswered(fb, best_rate, "best_rate (a dropout rate from the table)"):
        return fb
    dense = _load_groups("dropout")
    dev = {float(name.rsplit("p", 1)[1]): statistics.mean(r["best_dev_acc"] for r in rs) for name, rs in dense.items()}
    best = max(dev, key=dev.get)
    if not fb.check(abs(best_rate - best) < 1e-9,
                    f"dropout {best} has the best mean dev accuracy ({100 * dev[best]:.2f}%)",
                    f"dropout {best_rate} is not it; compare the best-dev column of the dense rows "
                    "(the meProp part is checked once the rate is right)"):
        return fb
    if unanswered(fb, meprop_helps, "meprop_helps (True or False)"):
        return fb
    test = [r["test_acc"] for r in dense[f"dense-p{best}"]]
    helps = []
    for name, rs in _load_groups("dropout_meprop").items():
        acc = [r["test_acc"] for r in rs]
        spread = max(statistics.stdev(acc), statistics.stdev(test)) if len(acc) > 1 and len(test) > 1 else 0.0
        helps.append(statistics.mean(acc) - statistics.mean(test) > spread)
        fb.lines.append(f"  {name}: {100 * statistics.mean(acc):.2f}% vs dense {100 * statistics.mean(test):.2f}% "
                        f"(difference {100 * (statistics.mean(acc) - statistics.mean(test)):+.2f}, "
                        f"spread {100 * spread:.2f})")
    truth = bool(helps) and all(helps)
    fb.check(meprop_helps == truth, "right: " + ("meProp adds to dropout beyond the spread" if truth else
                                                "no meProp row beats dense by more than the spread"),
             "look again at the differences against the spreads below")
    return fb
