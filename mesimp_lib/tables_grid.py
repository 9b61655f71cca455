"""The tables of the MNIST grid (``grid.py``'s suites) in the README: accuracy against the backprop ratio
(``k_grid`` with ``dense_h_k``), dropout (``dropout`` with ``dropout_meprop``) and meAct, beside the paper's
figures. Each table reads the stored results; ``tables.summarize_suite`` adds the provenance footer.
"""

from __future__ import annotations

import statistics

from .grid import DROPOUT_KS, DROPOUTS, KS, SEEDS, best_dropout
from .results import read_json, results_dir

__all__ = ["GRID_TABLES", "SHOWN_INSIDE"]

# the paper's figure (MNIST, Adam), read off the plot, approximate; keyed by k (k/500)
PAPER_FIGURE = {
    "topk": {5: 96.0, 20: 98.0, 40: 98.1, 80: 98.15, 160: 98.0},
    "random": {5: 86.8, 10: 90.5, 20: 92.2, 40: 94.1, 80: 96.0},
    "dense_h": {5: 90.7, 10: 94.1, 20: 96.4, 40: 97.1},
}


def _acc(suite: str, name: str) -> list[float]:
    out = []
    for s in SEEDS:
        f = results_dir(suite) / f"{name}-s{s}.json"
        if f.exists():
            out.append(100 * read_json(f)["test_acc"])
    return out


def _cell(values: list[float], paper: float | None = None) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    s = f"{statistics.mean(values):.2f} ± {sd:.2f} (n={len(values)})"
    return s + (f" [paper ~{paper}]" if paper is not None else "")


def table_claims(*_) -> list[str]:
    lines = [
        "| k (k/500) | meProp top-k | random-k (unscaled) | random-k rescaled | dense MLP h = k |",
        "|---|---|---|---|---|",
    ]
    for k in KS:
        lines.append(
            f"| {k} ({100 * k / 500:g}%) | {_cell(_acc('k_grid', f'topk-k{k}'), PAPER_FIGURE['topk'].get(k))} | "
            f"{_cell(_acc('k_grid', f'random-k{k}'), PAPER_FIGURE['random'].get(k))} | "
            f"{_cell(_acc('k_grid', f'random-rescaled-k{k}'))} | "
            f"{_cell(_acc('dense_h_k', f'dense-h{k}'), PAPER_FIGURE['dense_h'].get(k))} |"
        )
    lines.append(f"| dense (500) | {_cell(_acc('k_grid', 'dense'), 97.82)} | | | |")
    return lines + [
        "",
        "Test accuracy (%) at the best dev point, mean ± sd over seeds; `[paper ~x]` = the paper's figure "
        "(batch 10, C#), read off the plot. Ours: mini-batch 50, PyTorch, dev evaluated twice per epoch.",
    ]


def table_dropout(*_) -> list[str]:
    lines = ["| run | test acc % | best dev % |", "|---|---|---|"]

    def dev(suite, name):
        return [100 * read_json(results_dir(suite) / f"{name}-s{s}.json")["best_dev_acc"]
                for s in SEEDS if (results_dir(suite) / f"{name}-s{s}.json").exists()]

    for p in DROPOUTS:
        lines.append(f"| dense, dropout {p} | {_cell(_acc('dropout', f'dense-p{p}'))} | {_cell(dev('dropout', f'dense-p{p}'))} |")
    best = best_dropout()
    if best is not None:
        for k in DROPOUT_KS:
            name = f"meprop-k{k}-p{best}"
            lines.append(f"| meProp k={k}, dropout {best} (best for dense) | {_cell(_acc('dropout_meprop', name))} | "
                         f"{_cell(dev('dropout_meprop', name))} |")
    return lines + ["", "Paper (Table 4, MNIST): dense with dropout 0.2: 98.09; meProp k=25 with dropout 0.2: 98.32."]


def table_meact(*_) -> list[str]:
    lines = [
        "| run | seed | test acc % | active units / example (layer 1, 2) | mean abs update per step, before / after epoch 5 |",
        "|---|---|---|---|---|",
    ]
    for s in SEEDS:
        for name in ("baseline", "meact"):
            f = results_dir("meact") / f"{name}-s{s}.json"
            if not f.exists():
                continue
            r = read_json(f)
            samples = r["updates"]["samples"]
            before = [u["mean_abs_update"] for u in samples if u["epoch"] < 5]
            after = [u["mean_abs_update"] for u in samples if u["epoch"] >= 5]
            act = r.get("meact", {}).get("active_units_per_example") or ["500 (all)", "500 (all)"]
            lines.append(
                f"| {name} | {s} | {100 * r['test_acc']:.2f} | {act[0]}, {act[1]} | "
                f"{statistics.mean(before):.2e} / {statistics.mean(after):.2e} |"
            )
    return lines + ["", "meAct is a reconstruction from the paper's text (the authors released no code for it); "
                    "threshold 1.0 on the share statistic, start epoch 5."]


# suites with no table of their own: their rows are shown inside another suite's table (suite, which rows)
SHOWN_INSIDE = {"dense_h_k": ("k_grid", "the dense h=k rows"), "dropout_meprop": ("dropout", "the meProp rows")}
GRID_TABLES = {
    "k_grid": table_claims,
    "dropout": table_dropout,
    "meact": table_meact,
    **dict.fromkeys(SHOWN_INSIDE),
}
