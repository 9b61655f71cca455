"""The README's result tables: one Markdown table per stored suite, made from its JSON files, with the
papers' numbers and the provenance (commands, machines) beside it.

``summarize_suite(suite)`` makes one table; ``update_readme(path)`` rewrites the tables between the
``<!-- results:SUITE -->`` markers. The MNIST grid's tables are in ``tables_grid``, the NLP ones in
``tables_nlp``.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from .files import write_atomic
from .results import final_widths, load_groups, mean_sd, read_json, results_dir
from .tables_grid import GRID_TABLES, SHOWN_INSIDE
from .tables_nlp import NLP_PAPER, NLP_TABLES

__all__ = ["PAPER", "TABLES", "summarize_suite", "update_readme"]

PAPER = {
    "meprop_mnist": "Paper (ICML 2017, Table 1, Adam, batch 10, C#): dense 97.82, meProp k=20 98.01; "
    "backprop time of the linear parts 169.5 s -> 7.9 s (21.4x).",
    "mesimp_mnist": "Paper (meSimp, authors' README): dense 500 dims 98.20; meSimp top-160 154 average dims "
    "(30.8%) at 98.31.",
    "mesimp_same_size": "The paper's argument: the simplified model does better than the same-size model "
    "trained from scratch.",
    **NLP_PAPER,
    "quick": "Quick entries (2,000 training images, 2 epochs): `make results-quick` re-computes them and checks "
    "they equal the stored values.",
}


# suites whose table also shows the rows of another suite (stored in that suite's folder)
_ALSO_SHOWN = {table: f"; {rows}: `experiment {suite}`, `data/results/{suite}/`"
               for suite, (table, rows) in SHOWN_INSIDE.items()}


def _footer(suite: str, groups: dict[str, list[dict]]) -> list[str]:
    envs = sorted({(r["environment"]["cpu"], r["environment"]["torch"], r["environment"].get("cpu_count"))
                   for rs in groups.values() for r in rs}, key=str)
    paper = [PAPER[suite], ""] if suite in PAPER else []
    where = "; ".join(f"{cpu}, torch {torch}" + (f" ({n} cores)" if len(envs) > 1 else "") for cpu, torch, n in envs)
    parallel = "two runs in parallel" if all(n == 2 for *_, n in envs) else "several runs in parallel"
    return [
        "",
        *paper,
        f"Ours: `python -m mesimp_lib experiment {suite} --jobs 2` (the exact command of every run is in its "
        f"JSON under `data/results/{suite}/`{_ALSO_SHOWN.get(suite, '')}); {where}, 1 thread per run, {parallel}.",
    ]


def _table_meprop(suite: str, groups: dict[str, list[dict]]) -> list[str]:
    # speed ratios only against the dense run of the same seed made on the same kind of machine
    dense_bwd = {(r["config"]["seed"], r["environment"]["cpu"]): r["timing"]["backward_s"] for r in groups.get("dense", [])}
    lines = [
        "| run | seeds | test acc % (mean ± sd) | best dev % | backprop ratio | backward s / run | "
        "backward speedup vs dense (same seed) | whole run s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in groups.items():
        seeds = sorted(r["config"]["seed"] for r in rs)
        keys = [(r["config"]["seed"], r["environment"]["cpu"]) for r in rs]
        ratios = [dense_bwd[key] / r["timing"]["backward_s"] for key, r in zip(keys, rs) if key in dense_bwd]
        lines.append(
            f"| {name} | {','.join(map(str, seeds))} | {mean_sd([r['test_acc'] for r in rs])} | "
            f"{mean_sd([r['best_dev_acc'] for r in rs])} | {100 * rs[0]['backprop_ratio']:.1f}% | "
            f"{statistics.mean(r['timing']['backward_s'] for r in rs):.1f} | "
            f"{f'{statistics.mean(ratios):.2f}x' if ratios else '- (no dense run on that machine)'} | "
            f"{statistics.mean(r['timing']['total_s'] for r in rs):.0f} |"
        )
    return lines + [
        "",
        "Backward time is the whole `loss.backward()` of the model (all layers, non-linearities, "
        "PyTorch overhead), not only the linear parts as in the paper's Table 1.",
    ]


def _at_final_widths(r: dict) -> tuple[list[int], dict]:
    """(the widths at the best dev point, the evaluation with the best dev score after the run's last prune that
    removed units): the reported test accuracy can come from a model wider than the final one."""
    history = r["history"]
    if "widths_history" not in r:
        return final_widths(r), max(history, key=lambda h: h["dev_acc"])
    events = r["widths_history"]
    at_best = [e for e in events if e["step"] <= r["best_step"]][-1]["widths"]
    last = max((e["step"] for e in events if sum(e["removed"]) > 0), default=0)
    return at_best, max((h for h in history if h["step"] >= last), key=lambda h: h["dev_acc"])


def _table_mesimp(suite: str, groups: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| run | seeds | test acc % at the best dev point (mean ± sd) | widths at that point per seed | final widths "
        "per seed | average final width (mean) | share of 500 | test % at the final widths (best dev after the last "
        "prune) | parameters kept | whole run s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["config"]["seed"])
        avg = statistics.mean(sum(final_widths(r)) / len(final_widths(r)) for r in rs)
        params = [r["params"]["ratio"] for r in rs if "params" in r]
        final = [_at_final_widths(r) for r in rs]
        lines.append(
            f"| {name} | {','.join(str(r['config']['seed']) for r in rs)} | {mean_sd([r['test_acc'] for r in rs])} | "
            f"{' '.join(str(w) for w, _ in final)} | "
            f"{' '.join(str(final_widths(r)) for r in rs)} | {avg:.1f} | {100 * avg / 500:.1f}% | "
            f"{mean_sd([h['test_acc'] for _, h in final])} | "
            f"{f'{100 * statistics.mean(params):.1f}%' if params else '100%'} | "
            f"{statistics.mean(r['timing']['total_s'] for r in rs):.0f} |"
        )
    return lines


def _table_same_size(suite: str, groups: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| widths from | seed | widths | dense from scratch at these widths, test % | meSimp at these widths, test % "
        "(best dev after the last prune) | meSimp minus dense |",
        "|---|---|---|---|---|---|",
    ]
    for name, rs in groups.items():
        source = re.search(r"dense-at-(.*)-widths", name).group(1)
        for r in sorted(rs, key=lambda r: r["config"]["seed"]):
            seed = r["config"]["seed"]
            src = results_dir("mesimp_mnist") / f"{source}-s{seed}.json"
            m = _at_final_widths(read_json(src))[1]["test_acc"] if src.exists() else None
            diff = f"{100 * (m - r['test_acc']):+.2f}" if m is not None else "-"
            lines.append(
                f"| {source} | {seed} | {r['config']['hidden']} | {100 * r['test_acc']:.2f} | "
                f"{'-' if m is None else f'{100 * m:.2f}'} | {diff} |"
            )
    return lines


def _table_quick(suite: str, groups: dict[str, list[dict]]) -> list[str]:
    lines = ["| entry | command | test acc % | best dev % |", "|---|---|---|---|"]
    for name, rs in groups.items():
        r = rs[0]
        lines.append(f"| {name} | `{r['command'].replace(' --json OUT.json', '')}` | {100 * r['test_acc']:.2f} | "
                     f"{100 * r['best_dev_acc']:.2f} |")
    return lines


def _table_widgets(suite: str, groups: dict[str, list[dict]]) -> list[str]:
    return [f"{len(groups)} small meSimp runs (prune rate x k) for the layer-shrinkage widget."]


TABLES = {
    "meprop_mnist": _table_meprop,
    "mesimp_mnist": _table_mesimp,
    "mesimp_same_size": _table_same_size,
    **GRID_TABLES,
    "quick": _table_quick,
    "widget_shrinkage": _table_widgets,
    **NLP_TABLES,
}


def summarize_suite(suite: str) -> str:
    """A Markdown table from the stored JSON of one suite."""
    if suite == "mesimp_inference":
        return _table_inference()
    if TABLES.get(suite, "") is None:
        return ""  # shown inside another suite's table
    groups = load_groups(suite)
    if not groups:
        return f"_No stored results for `{suite}` yet: run `python -m mesimp_lib experiment {suite}`._\n"
    return "\n".join(TABLES[suite](suite, groups) + _footer(suite, groups)) + "\n"


def _table_inference() -> str:
    path = results_dir("mesimp_inference") / "inference.json"
    if not path.exists():
        return "_No stored results yet: run `python -m mesimp_lib experiment mesimp_inference`._\n"
    res = read_json(path)
    lines = [
        "| model | widths | parameters (share of 784-500-500-10) | test acc % (final model) | "
        "batch 1: original / simplified ms, speedup | batch 1000: original / simplified ms, speedup |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        b1, bk = r["batch1"], r["batch1000"]
        lines.append(
            f"| {r['model']} | {r['widths']} | {r['params']:,} ({100 * r['param_ratio']:.1f}%) | "
            f"{100 * r['test_acc_final_model']:.2f} | {b1['original_ms']:.1f} / {b1['simplified_ms']:.1f}, "
            f"**{b1['speedup']:.2f}x** | {bk['original_ms']:.1f} / {bk['simplified_ms']:.1f}, **{bk['speedup']:.2f}x** |"
        )
    env = res["environment"]
    lines += [
        "",
        f"`{res['command']}`: plain `nn.Sequential` exports, `torch.no_grad`, 1 thread, original and "
        f"simplified interleaved in one process, median of {res['rounds']} rounds; batch 1 = the first 1,000 "
        f"test images one at a time, batch 1000 = all 10,000. {env['cpu']}, torch {env['torch']}.",
    ]
    return "\n".join(lines) + "\n"


def _no_html(text: str) -> str:
    """Stored results are data, not markup: ``&`` and ``<`` are escaped, so HTML (or an entity) in a stored
    name, command or CPU string is shown as text in the README, never rendered or run."""
    return text.replace("&", "&amp;").replace("<", "&lt;")


def update_readme(readme: str | Path, suites=None) -> None:
    """Replace the text between ``<!-- results:SUITE -->`` and ``<!-- /results:SUITE -->``."""
    path = Path(readme)
    text = path.read_text()
    for suite in suites or [*TABLES, "mesimp_inference"]:
        start, end = f"<!-- results:{suite} -->", f"<!-- /results:{suite} -->"
        if start in text and end in text:
            a = text.index(start) + len(start)
            b = text.index(end)
            text = text[:a] + "\n" + _no_html(summarize_suite(suite)) + text[b:]
    write_atomic(path, lambda f: f.write(text))
