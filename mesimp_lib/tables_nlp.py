"""The tables of the NLP suites (``nlp_grid.py``: POS tagging and parsing on UD English EWT) and of the lazy
optimizer runs, with the papers' numbers beside them. Each table reads the stored results;
``tables.summarize_suite`` adds the provenance footer.
"""

from __future__ import annotations

import statistics

from .nlp_grid import NLP_SUITES, chosen_rate
from .results import final_widths, load_groups, mean_sd

__all__ = ["NLP_PAPER", "NLP_TABLES"]


def _bwd_per_epoch(r: dict) -> float:
    return r["timing"]["backward_s"] / max(1, r["config"]["epochs"])


def _table_nlp(suite: str, groups: dict[str, list[dict]]) -> list[str]:
    parse = suite.startswith("parse")
    dense_bwd = {r["config"]["seed"]: _bwd_per_epoch(r) for r in groups.get("dense", [])}
    metric = "test UAS % | test LAS %" if parse else "test acc %"
    lines = [
        f"| run | seeds | {metric} | best dev % | backprop ratio | backward s / epoch | "
        "backward speedup vs dense (same seed) | final widths per seed | average width (share of 500) | "
        "parameters kept (embeddings included) |",
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if parse else ""),
    ]
    def order(item):  # dense, meProp by k, meSimp (by prune rate)
        r = item[1][0]["config"]
        return (("dense", "meprop", "random", "mesimp").index(r["method"]), r["k"] or 0, r["prune_rate"])

    for name, rs in sorted(groups.items(), key=order):
        rs = sorted(rs, key=lambda r: r["config"]["seed"])
        ratios = [dense_bwd[r["config"]["seed"]] / _bwd_per_epoch(r) for r in rs if r["config"]["seed"] in dense_bwd]
        params = [r["params"]["ratio"] for r in rs if "params" in r]
        avg = statistics.mean(sum(final_widths(r)) / len(final_widths(r)) for r in rs)
        scores = mean_sd([r["test_acc"] for r in rs])
        if parse:
            scores += " | " + mean_sd([r["test_las"] for r in rs])
        lines.append(
            f"| {name} | {','.join(str(r['config']['seed']) for r in rs)} | {scores} | "
            f"{mean_sd([r['best_dev_acc'] for r in rs])} | {100 * rs[0]['backprop_ratio']:.1f}% | "
            f"{statistics.mean(_bwd_per_epoch(r) for r in rs):.1f} | "
            f"{f'{statistics.mean(ratios):.2f}x' if ratios else '-'} | {' '.join(str(final_widths(r)) for r in rs)} | "
            f"{avg:.1f} ({100 * avg / 500:.1f}%) | {f'{100 * statistics.mean(params):.1f}%' if params else '100%'} |"
        )
    if suite.endswith("_rates"):
        rate, devs = chosen_rate(suite)
        lines += ["", f"Chosen on dev (seed 1): prune rate {rate} (best dev: "
                  + ", ".join(f"{p}: {100 * d:.2f}" for p, d in sorted(devs.items())) + ")."]
    return lines


def _table_lazy(suite: str, groups: dict[str, list[dict]]) -> list[str]:
    base = load_groups("meprop_mnist")
    lines = [
        "| run | optimizer | kernel, dW | seeds | test acc % (mean ± sd) | best dev % | forward s / run | "
        "backward s / run | optimizer s / run | whole run s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [("dense", base.get("dense", [])), ("meprop-per_example-k20", base.get("meprop-per_example-k20", [])),
            *groups.items()]
    for name, rs in rows:
        if not rs:
            continue
        rs = sorted(rs, key=lambda r: r["config"]["seed"])
        lines.append(
            f"| {name} | {rs[0]['config']['optimizer']} | {rs[0]['config'].get('kernel', 'torch')}, "
            f"{_weight_grad_label(rs[0]['config']['weight_grad'])} | {','.join(str(r['config']['seed']) for r in rs)} | "
            f"{mean_sd([r['test_acc'] for r in rs])} | {mean_sd([r['best_dev_acc'] for r in rs])} | "
            f"{statistics.mean(r['timing']['forward_s'] for r in rs):.1f} | "
            f"{statistics.mean(r['timing']['backward_s'] for r in rs):.1f} | "
            f"{statistics.mean(r['timing']['update_s'] for r in rs):.1f} | "
            f"{statistics.mean(r['timing']['total_s'] for r in rs):.0f} |"
        )
    return lines


def _weight_grad_label(stored: str) -> str:
    """The weight-gradient form a stored run is read as today (the removed 'buffer' form gave the
    same gradient numbers as 'dense', which it is read as)."""
    return "dense (stored: buffer)" if stored == "buffer" else stored


NLP_TABLES = {name: (_table_lazy if name == "lazy_mnist" else _table_nlp) for name in NLP_SUITES}

NLP_PAPER = {
    "pos_ud": "Paper (ICML 2017 Table 1, Adam, Penn Treebank WSJ, XPOS-style tags, batch 1 sentence, C#): "
    "dense 97.07, meProp k=5 97.12, backprop time of the linear parts 65.4x faster; meSimp (authors' README): "
    "500 dims 97.22 -> top-20 60 dims (12.0%) at 97.25. Ours: UD English EWT (204k training tokens, UPOS), "
    "mini-batches of sentences, whole-`backward()` times.",
    "parse_ud": "Paper (ICML 2017 Table 1, Adam, Penn Treebank, UAS): dense 89.84, meProp k=20 90.01, backprop of "
    "the linear parts 18.6x faster; meSimp (authors' README): 500 dims 89.80 -> top-20 51 dims (10.2%) at 90.11. "
    "Ours: UD English EWT, gold POS tags, UAS/LAS without punctuation, projective training sentences only.",
    "lazy_mnist": "The lazy Adam updates only weight rows that received a gradient (their moments too); idle rows "
    "stay frozen. It is NOT the paper's optimizer (the papers used unmodified Adam). The first two rows are the "
    "`meprop_mnist` runs (standard Adam, same setting). Run times come from runs that shared the 2 cores with "
    "other runs; the controlled speed ratios are in `benchmarks/RESULTS.md`.",
}
