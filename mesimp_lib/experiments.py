"""Stored experiments: named suites of training runs, run resumably, summarised into tables.

``python -m mesimp_lib experiment meprop_mnist --jobs 2`` runs every run of the suite
whose result file is missing, each as its own ``python -m mesimp_lib train ... --json``
process (so the stored command is exactly what produced the file), writing each result
atomically as it finishes: an interrupted suite loses nothing that finished.
``python -m mesimp_lib summarize --readme README.md`` regenerates the tables from the JSON.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from .results import read_json
from .tasks.mnist import data_root
from .training import TrainConfig

__all__ = ["SUITES", "results_dir", "run_suite", "summarize_suite", "update_readme"]

SEEDS = (1, 2, 3)


def _meprop_mnist() -> dict[str, TrainConfig]:
    """The paper's MNIST setting (784-500-500-10, Adam, batch 10, 20 epochs): dense vs k=20."""
    runs = {}
    for seed in SEEDS:
        for method, mode in (("dense", "per_example"), ("meprop", "per_example"), ("meprop", "unified")):
            cfg = TrainConfig(method=method, mode=mode, k=20, batch_size=10, epochs=20, seed=seed)
            name = "dense" if method == "dense" else f"meprop-{mode}-k20"
            runs[f"{name}-s{seed}"] = cfg
    return runs


SUITES = {"meprop_mnist": _meprop_mnist}

PAPER = {
    "meprop_mnist": "Paper (ICML 2017, Table 1, Adam, batch 10, C#): dense 97.82, meProp k=20 98.01; "
    "backprop time of the linear parts 169.5 s -> 7.9 s (21.4x)."
}


def results_dir(suite: str) -> Path:
    return data_root() / "results" / suite


def _command(cfg: TrainConfig, path: Path) -> list[str]:
    return [sys.executable, "-m", "mesimp_lib", *cfg.to_cli().split()[3:], "--json", str(path), "--quiet"]


def run_suite(suite: str, jobs: int = 1, dry_run: bool = False, log=print) -> list[Path]:
    """Run the suite's missing runs (``jobs`` at a time, 1 thread each). Returns new files."""
    if suite not in SUITES:
        raise ValueError(f"suite={suite!r} is unknown; allowed: {', '.join(SUITES)}")
    out = results_dir(suite)
    todo = []
    for name, cfg in SUITES[suite]().items():
        path = out / f"{name}.json"
        if path.exists() and read_json(path).get("config") == asdict(cfg):
            continue
        todo.append((name, cfg, path))
    log(f"{suite}: {len(todo)} run(s) to do, results in {out}")
    if dry_run:
        for name, cfg, _ in todo:
            log(f"  {name}: {cfg}")
        return []

    def one(item):
        name, cfg, path = item
        proc = subprocess.run(_command(cfg, path), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-2000:]}")
        log(f"  done {name}: test {read_json(path)['test_acc']:.4f}")
        return path

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, todo))


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    m = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * m:.2f} ± {100 * sd:.2f}"


def summarize_suite(suite: str) -> str:
    """A Markdown table from the stored JSON of one suite."""
    files = sorted(results_dir(suite).glob("*.json"))
    groups: dict[str, list[dict]] = {}
    for f in files:
        r = read_json(f)
        groups.setdefault(re.sub(r"-s\d+$", "", f.stem), []).append(r)
    if not groups:
        return f"_No stored results for `{suite}` yet: run `python -m mesimp_lib experiment {suite}`._\n"
    dense = groups.get("dense", [])
    dense_bwd = {r["config"]["seed"]: r["timing"]["backward_s"] for r in dense}
    lines = [
        "| run | seeds | test acc % (mean ± sd) | best dev % | backprop ratio | backward s / run | "
        "backward speedup vs dense (same seed) | whole run s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in groups.items():
        seeds = sorted(r["config"]["seed"] for r in rs)
        bwd = [r["timing"]["backward_s"] for r in rs]
        ratios = [dense_bwd[r["config"]["seed"]] / r["timing"]["backward_s"] for r in rs if r["config"]["seed"] in dense_bwd]
        lines.append(
            f"| {name} | {','.join(map(str, seeds))} | {_mean_sd([r['test_acc'] for r in rs])} | "
            f"{_mean_sd([r['best_dev_acc'] for r in rs])} | {100 * rs[0]['backprop_ratio']:.1f}% | "
            f"{statistics.mean(bwd):.1f} | {statistics.mean(ratios):.2f}x | "
            f"{statistics.mean(r['timing']['total_s'] for r in rs):.0f} |"
        )
    env = read_json(files[0])["environment"]
    lines += [
        "",
        f"{PAPER.get(suite, '')}",
        "",
        f"Ours: `python -m mesimp_lib experiment {suite}` (commands in each JSON under "
        f"`data/results/{suite}/`), {env['cpu']}, torch {env['torch']}, 1 thread per run, "
        "two runs in parallel. Backward time is the whole `loss.backward()` of the model "
        "(all layers, non-linearities, PyTorch overhead), not only the linear parts.",
    ]
    return "\n".join(lines) + "\n"


def update_readme(readme: str | Path, suites=None) -> None:
    """Replace the text between ``<!-- results:SUITE -->`` and ``<!-- /results:SUITE -->``."""
    path = Path(readme)
    text = path.read_text()
    for suite in suites or SUITES:
        start, end = f"<!-- results:{suite} -->", f"<!-- /results:{suite} -->"
        if start in text and end in text:
            a = text.index(start) + len(start)
            b = text.index(end)
            text = text[:a] + "\n" + summarize_suite(suite) + text[b:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
