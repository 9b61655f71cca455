"""Self-checks for 09_speed.ipynb (each returns a Feedback; none raises on a wrong answer).
Where an answer can be recomputed cheaply, the check recomputes it rather than trusting a constant."""

from __future__ import annotations

import torch

from . import Feedback

__all__ = ["check_exercise_1", "check_exercise_2", "check_exercise_3", "rows_moved"]


def check_exercise_1(macs_ratio: float, rows_touched: int) -> Feedback:
    """Step 1's layer with ``mode="per_example", kernel="torch"``: your ``s.macs_ratio`` and
    ``s.last_rows_touched``."""
    from ..meprop import MePropLinear

    fb = Feedback("09 exercise 1")
    B, n_in, n_out, k = 4, 6, 10, 3
    torch.manual_seed(0)
    layer = MePropLinear(n_in, n_out, k=k, mode="per_example", kernel="torch")
    layer(torch.randn(B, n_in, requires_grad=True)).pow(2).sum().backward()
    s = layer.stats
    fb.check(abs(macs_ratio - s.macs_ratio) < 1e-9, f"macs_ratio {s.macs_ratio:.2f}",
             f"macs_ratio {macs_ratio!r}, but Step 1 with mode='per_example', kernel='torch' gives {s.macs_ratio:.2f}")
    fb.check(rows_touched == s.last_rows_touched, f"{s.last_rows_touched} of {n_out} rows touched",
             f"{rows_touched!r} rows, but the layer touched {s.last_rows_touched}")
    if s.macs_ratio > k / n_out:
        fb.check(True, f"not k/n = {k / n_out}: the examples' top-{k} sets cover {s.last_rows_touched} rows, so "
                 "the pure-PyTorch path multiplies a masked gradient of full size", "")
    return fb


def check_exercise_2(results: list[dict]) -> Feedback:
    """``results``: the ``bench_layer(batch=b, n=2048, k=20, scale=0.3)`` dicts for b in 1, 32, 256."""
    fb = Feedback("09 exercise 2")
    ok = isinstance(results, list) and all(isinstance(r, dict) and "speedup" in r for r in results)
    if not fb.check(ok and {r["batch"] for r in results} >= {1, 32, 256}, "batches 1, 32 and 256",
                    "pass the list of bench_layer results for batch 1, 32 and 256"):
        return fb
    fb.check(all(r["correct"] for r in results), "every gradient was right", "a gradient was wrong: a bug")
    fb.check(all(r["speedup"] < r["limit"] for r in results), "every speedup stays below its FLOP limit n/k",
             "a speedup above n/k: a timing fluke, run again")
    by = sorted(results, key=lambda r: r["batch"])
    fb.check(True, "speedups " + ", ".join(f"batch {r['batch']}: {r['speedup']:.1f}x" for r in by)
             + (": it grows with the batch" if by[-1]["speedup"] > by[0]["speedup"]
                else ": not growing this time; timings vary, run again"), "")
    return fb


def rows_moved(make_optimizer, steps: int = 2) -> list[int]:
    """Step 5's measurement: rows of W that changed at each step (a fresh, equally seeded layer)."""
    from ..meprop import MePropLinear

    torch.manual_seed(0)
    layer = MePropLinear(8, 12, k=3, mode="unified", bias=False)
    opt = make_optimizer(layer.parameters())
    moved = []
    for xb in torch.randn(steps, 5, 8):
        before = layer.weight.detach().clone()
        opt.zero_grad()
        layer(xb).pow(2).sum().backward()
        opt.step()
        moved.append(int((layer.weight.detach() != before).any(dim=1).sum()))
    return moved


def check_exercise_3(sgd: list[int], sgd_momentum: list[int]) -> Feedback:
    """``sgd`` / ``sgd_momentum``: ``rows_moved`` with plain SGD (lr 0.01) and with momentum=0.9."""
    fb = Feedback("09 exercise 3")
    plain = rows_moved(lambda p: torch.optim.SGD(p, lr=0.01))
    mom = rows_moved(lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9))
    fb.check(list(sgd) == plain, f"plain SGD moves {plain}: a zero gradient moves nothing (already lazy)",
             f"{sgd!r}, but plain SGD moves {plain} rows per step")
    fb.check(list(sgd_momentum) == mom, f"with momentum {mom}: step 1's rows keep moving at step 2, as in Adam",
             f"{sgd_momentum!r}, but SGD with momentum 0.9 moves {mom}")
    return fb
