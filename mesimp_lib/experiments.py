"""Stored experiments: named suites of training runs, run resumably, summarised into tables.

``python -m mesimp_lib experiment meprop_mnist --jobs 2`` runs every run of the suite
whose result file is missing, each as its own ``python -m mesimp_lib train ... --json``
process (so the stored command is exactly what produced the file), writing each result
atomically as it finishes: an interrupted suite loses nothing that finished.
``python -m mesimp_lib summarize --readme README.md`` regenerates the tables from the JSON.
"""

from __future__ import annotations

import re
import shlex
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace
from pathlib import Path

from .children import ChildGroup
from .files import write_atomic
from .results import mean_sd as _mean_sd, read_json, write_json_atomic
from .tasks.mnist import data_root
from .grid import GRID_SUITES, GRID_TABLES, SHOWN_INSIDE, _quick
from .nlp_grid import NLP_PAPER, NLP_SUITES, NLP_TABLES
from .training import AUTHORS, AUTHORS_MESIMP, TrainConfig

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
        # the authors' C# settings (authors=True: C# init, summed loss, clip 5, 8 evaluations per epoch)
        runs[f"authors-meprop-per_example-k20-s{seed}"] = TrainConfig(method="meprop", k=20, batch_size=10, epochs=20,
                                                                      seed=seed, authors=True)
    return runs


MESIMP_MNIST = dict(batch_size=100, epochs=20, grad_clip=5.0, prune_rate=0.1, cycle_epochs=5, prunes_per_epoch=8)


def _mesimp_mnist() -> dict[str, TrainConfig]:
    """The authors' meSimp MNIST config (k=160) and a small-k one (k=20), plus the dense
    500-500 baseline trained the same way (batch 100, clip 5); and, named ``authors-*``, the same
    two runs with the authors' full C# configuration (``authors=True``: C# init, summed loss, their
    Adam reset schedule, zero-filler hits, 8 evaluations per epoch), and two ``ablation-*`` runs that
    each change one of those settings. The prefixes keep their models out of ``mesimp-*.pt`` (the
    inference benchmark's set)."""
    runs = {}
    for seed in SEEDS:
        runs[f"authors-mesimp-k160-s{seed}"] = TrainConfig(method="mesimp", seed=seed, epochs=20, authors=True)
        runs[f"authors-dense-500-s{seed}"] = TrainConfig(method="dense", k=None, seed=seed, batch_size=100, epochs=20,
                                                         authors=True)
        # which of the authors' settings makes the difference: each run changes one of them
        runs[f"ablation-mesimp-k160-no-zero-hits-s{seed}"] = TrainConfig(
            method="mesimp", seed=seed, epochs=20, **{**AUTHORS, **AUTHORS_MESIMP, "count_zero_hits": False})
        runs[f"ablation-mesimp-k160-reset-moments-s{seed}"] = TrainConfig(method="mesimp", seed=seed, epochs=20,
                                                                          authors=True, reset="moments")
        runs[f"dense-500-s{seed}"] = TrainConfig(method="dense", k=None, seed=seed, batch_size=100, epochs=20, grad_clip=5.0)
        for k in (160, 20):
            runs[f"mesimp-k{k}-s{seed}"] = TrainConfig(method="mesimp", k=k, seed=seed, **MESIMP_MNIST)
    return runs


def _mesimp_same_size() -> dict[str, TrainConfig]:
    """A dense MLP trained from scratch at the widths meSimp ended with (same seed, same
    training set-up, the authors' for the ``authors-`` runs): the comparison that says whether the
    simplified model is more than a small model. Needs the mesimp_mnist results first."""
    runs = {}
    for seed in SEEDS:
        for source, authors in (("mesimp-k160", False), ("mesimp-k20", False), ("authors-mesimp-k160", True)):
            src = results_dir("mesimp_mnist") / f"{source}-s{seed}.json"
            if not src.exists():
                continue
            widths = read_json(src)["final_widths"]
            runs[f"dense-at-{source}-widths-s{seed}"] = TrainConfig(
                method="dense", k=None, hidden=list(widths), seed=seed, batch_size=100, epochs=20, grad_clip=5.0,
                authors=authors)
    return runs


def _widget_shrinkage() -> dict[str, TrainConfig]:
    """Small meSimp runs the layer-shrinkage widget switches between (prune rate x k)."""
    return {
        f"mesimp-p{p}-k{k}": TrainConfig(method="mesimp", k=k, prune_rate=p, seed=1, batch_size=50, epochs=4,
                                         train_limit=10_000, cycle_epochs=1, prunes_per_epoch=4, evals_per_epoch=2)
        for p in WIDGET_PRUNE_RATES for k in WIDGET_KS
    }


WIDGET_PRUNE_RATES = (0.05, 0.1, 0.2)
WIDGET_KS = (20, 80, 160)



def _reference_kernel(make):
    """The suite's runs with the readable PyTorch backward (``kernel="torch"``, the library default when the
    stored runs were made), so that they recompute bit for bit; the library default ``"auto"`` takes the
    compiled kernels, whose sums round differently."""
    return lambda: {name: replace(cfg, kernel="torch") for name, cfg in make().items()}


OWN_KERNEL = {"lazy_mnist"}  # suites that name their kernel themselves
SUITES = {name: make if name in OWN_KERNEL else _reference_kernel(make) for name, make in {
    "meprop_mnist": _meprop_mnist,
    "mesimp_mnist": _mesimp_mnist,
    "mesimp_same_size": _mesimp_same_size,
    **GRID_SUITES,
    "quick": _quick,
    "widget_shrinkage": _widget_shrinkage,
    **NLP_SUITES,
}.items()}
# what `experiment all` (make results) runs, in dependency order
ALL = [*[name for name in SUITES if name != "widget_shrinkage"], "mesimp_inference", "widgets"]
SAVE_MODELS = {"mesimp_mnist"}  # suites whose trained models are kept (small: they were simplified)

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


def results_dir(suite: str) -> Path:
    return data_root() / "results" / suite


def _command(cfg: TrainConfig, path: Path, save_model: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "mesimp_lib", *shlex.split(cfg.to_cli())[3:], "--json", str(path), "--quiet"]
    if save_model and cfg.method == "mesimp":
        cmd += ["--save-model", str(path.with_suffix(".pt"))]
    return cmd


def _same_config(stored: dict | None, cfg: TrainConfig) -> bool:
    """A stored run counts as done if its config equals ``cfg`` (fields added to TrainConfig
    since it was written take their defaults)."""
    if not stored:
        return False
    names = {f.name for f in fields(TrainConfig)}
    try:
        # the device a run was made on does not change what it computes (--device on `experiment`)
        return TrainConfig(**{k: v for k, v in stored.items() if k in names and k != "device"}) == replace(cfg, device="cpu")
    except ValueError:
        return False


def _stored_twin(suite: str, cfg: TrainConfig) -> Path | None:
    """A stored run with exactly this config in the suite's ``_rates`` companion, if any."""
    other = results_dir(suite + "_rates")
    if suite.endswith("_rates") or not other.is_dir():
        return None
    for f in sorted(other.glob("*.json")):
        if _same_config(read_json(f).get("config"), cfg):
            return f
    return None


def run_suite(suite: str, jobs: int = 1, dry_run: bool = False, log=print, seeds=None, device: str | None = None,
              names=None) -> list[Path]:
    """Run the suite's missing runs (``jobs`` at a time, 1 thread each). Returns new files.

    ``device`` runs them on another device (e.g. "cuda"); the stored config then says so, and a
    stored run counts as done whatever its device. ``names`` restricts to runs whose name
    starts with one of these prefixes."""
    if suite == "widgets":
        if not dry_run:
            from .recordings import record_active_paths

            log(f"widgets: wrote {record_active_paths()}")
            run_suite("widget_shrinkage", jobs=jobs, log=log)
        return []
    if suite == "mesimp_inference":
        if not dry_run:
            inference_speed()
            log("mesimp_inference: wrote " + str(results_dir("mesimp_inference") / "inference.json"))
        return []
    if suite not in SUITES:
        raise ValueError(f"suite={suite!r} is unknown; allowed: {', '.join([*SUITES, 'mesimp_inference'])}")
    out = results_dir(suite)
    restore = f"python -m mesimp_lib experiment {suite}"
    todo = []
    for name, cfg in SUITES[suite]().items():
        path = out / f"{name}.json"
        if seeds is not None and cfg.seed not in seeds:
            continue
        if names and not any(name.startswith(n) for n in names):
            continue
        if device is not None:
            cfg = replace(cfg, device=device)
        if path.exists() and _same_config(read_json(path, restore).get("config"), cfg):
            continue
        twin = _stored_twin(suite, cfg)
        if twin is not None and not dry_run:  # the same run, already made for the prune-rate choice
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, read_json(twin))
            log(f"  {name}: the same config is stored as {twin}; copied")
            continue
        todo.append((name, cfg, path))
    log(f"{suite}: {len(todo)} run(s) to do, results in {out}")
    if dry_run:
        for name, cfg, _ in todo:
            log(f"  {name}: {cfg}")
        return []

    failed = []

    def one(item):
        name, cfg, path = item
        proc = group.run(_command(cfg, path, suite in SAVE_MODELS))
        if proc.returncode != 0:  # the other runs go on; the suite reports every failure at the end
            failed.append(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
            return None
        log(f"  done {name}: test {read_json(path, restore)['test_acc']:.4f}")
        return path

    # leaving by an exception or Ctrl-C kills the running children (ChildGroup first, then the pool)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, ChildGroup() as group:
        done = [p for p in pool.map(one, todo) if p is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(todo)} run(s) of {suite} failed (the others are stored; a re-run "
                           "does only the missing ones):\n" + "\n".join(failed))
    return done


def _load_groups(suite: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    restore = f"python -m mesimp_lib experiment {suite}"
    for f in sorted(results_dir(suite).glob("*.json")):
        groups.setdefault(re.sub(r"-s\d+$", "", f.stem), []).append(read_json(f, restore))
    return groups


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
            f"| {name} | {','.join(map(str, seeds))} | {_mean_sd([r['test_acc'] for r in rs])} | "
            f"{_mean_sd([r['best_dev_acc'] for r in rs])} | {100 * rs[0]['backprop_ratio']:.1f}% | "
            f"{statistics.mean(r['timing']['backward_s'] for r in rs):.1f} | "
            f"{f'{statistics.mean(ratios):.2f}x' if ratios else '- (no dense run on that machine)'} | "
            f"{statistics.mean(r['timing']['total_s'] for r in rs):.0f} |"
        )
    return lines + [
        "",
        "Backward time is the whole `loss.backward()` of the model (all layers, non-linearities, "
        "PyTorch overhead), not only the linear parts as in the paper's Table 1.",
    ]


def _widths(r: dict) -> list[int]:
    return r.get("final_widths") or r["widths"]


def _at_final_widths(r: dict) -> tuple[list[int], dict]:
    """(the widths at the best dev point, the evaluation with the best dev score after the run's last prune that
    removed units): the reported test accuracy can come from a model wider than the final one."""
    history = r["history"]
    if "widths_history" not in r:
        return _widths(r), max(history, key=lambda h: h["dev_acc"])
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
        avg = statistics.mean(sum(_widths(r)) / len(_widths(r)) for r in rs)
        params = [r["params"]["ratio"] for r in rs if "params" in r]
        final = [_at_final_widths(r) for r in rs]
        lines.append(
            f"| {name} | {','.join(str(r['config']['seed']) for r in rs)} | {_mean_sd([r['test_acc'] for r in rs])} | "
            f"{' '.join(str(w) for w, _ in final)} | "
            f"{' '.join(str(_widths(r)) for r in rs)} | {avg:.1f} | {100 * avg / 500:.1f}% | "
            f"{_mean_sd([h['test_acc'] for _, h in final])} | "
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
    groups = _load_groups(suite)
    if not groups:
        return f"_No stored results for `{suite}` yet: run `python -m mesimp_lib experiment {suite}`._\n"
    return "\n".join(TABLES[suite](suite, groups) + _footer(suite, groups)) + "\n"


def verify_suite(suite: str, log=print) -> bool:
    """Re-compute every stored run of a suite in this process and compare its evaluation
    history with the stored one (bit-for-bit on the same kind of machine, 1 thread)."""
    from .training import train

    ok = True
    for name, cfg in SUITES[suite]().items():
        path = results_dir(suite) / f"{name}.json"
        if not path.exists():
            log(f"  {name}: no stored result to compare with")
            ok = False
            continue
        stored = read_json(path)
        fresh = train(cfg, progress=False)
        same = [(h["dev_acc"], h["test_acc"], h["train_loss"]) for h in fresh["history"]] == [
            (h["dev_acc"], h["test_acc"], h["train_loss"]) for h in stored["history"]]
        ok &= same
        cpu_here, cpu_there = fresh["environment"]["cpu"], stored["environment"]["cpu"]
        note = "" if same or cpu_here == cpu_there else (
            f"; stored on {cpu_there}, re-computed on {cpu_here}: bit-equality is promised on the same CPU kind only")
        log(f"  {name}: {'identical' if same else 'DIFFERENT'} (test {100 * fresh['test_acc']:.2f}% vs stored "
            f"{100 * stored['test_acc']:.2f}%{note})")
    return ok


# ----------------------------------------------------------------------------- inference speed


def inference_speed(rounds: int = 15) -> dict:
    """Time the simplified (physical) meSimp models against the original 784-500-500-10 shape
    on the MNIST test set, batch 1 and batch 1000, 1 thread, interleaved in one process, and store
    the result in ``data/results/mesimp_inference/inference.json``."""
    from .results import environment, write_json_atomic

    rows = measure_inference(rounds)
    out = {"rows": rows, "rounds": rounds, "command": "python -m mesimp_lib experiment mesimp_inference",
           "environment": environment()}
    write_json_atomic(results_dir("mesimp_inference") / "inference.json", out)
    return out


def measure_inference(rounds: int = 15) -> list[dict]:
    """The timing of ``inference_speed`` (also run by ``make bench``), one row per saved meSimp model
    (``data/results/mesimp_mnist/mesimp-*.pt``; [] when there are none).

    Inference time depends on the shapes only, so the original-size model is a fresh
    784-500-500-10 network; the simplified ones are the saved trained models, whose test
    accuracy is re-computed here as a check."""
    import time

    import torch

    from .checkpoint import load_model
    from .tasks.mnist import MLP, accuracy, load_mnist

    torch.set_num_threads(1)
    data = load_mnist()
    torch.manual_seed(0)
    original = MLP().to_sequential().eval()
    n_orig = sum(p.numel() for p in original.parameters())
    x1 = data.test_x[:1000]  # batch 1: the first 1,000 test images one at a time
    rows = []
    for model_path in sorted(results_dir("mesimp_mnist").glob("mesimp-*.pt")):
        small_mlp = load_model(model_path)
        acc = accuracy(small_mlp, data.test_x, data.test_y)
        small = small_mlp.to_sequential().eval()
        entry = {"model": model_path.name, "widths": small_mlp.widths, "test_acc_final_model": acc,
                 "params": sum(p.numel() for p in small.parameters()), "params_original": n_orig}
        for batch in (1, 1000):
            def run(m, batch=batch):
                with torch.no_grad():
                    if batch == 1:
                        for i in range(len(x1)):
                            m(x1[i : i + 1])
                    else:
                        for i in range(0, len(data.test_x), batch):
                            m(data.test_x[i : i + batch])

            for _ in range(2):
                run(original)
                run(small)
            ratios, t_o, t_s = [], [], []
            for _ in range(rounds):
                ts = []
                for m in (original, small, small, original):
                    t = time.perf_counter()
                    run(m)
                    ts.append(time.perf_counter() - t)
                ratios.append((ts[0] + ts[3]) / (ts[1] + ts[2]))
                t_o += [ts[0], ts[3]]
                t_s += [ts[1], ts[2]]
            entry[f"batch{batch}"] = {
                "images": len(x1) if batch == 1 else len(data.test_x),
                "original_ms": 1e3 * statistics.median(t_o), "simplified_ms": 1e3 * statistics.median(t_s),
                "speedup": statistics.median(ratios),
            }
        entry["param_ratio"] = entry["params"] / n_orig
        rows.append(entry)
    return rows


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
    for suite in suites or [*SUITES, "mesimp_inference"]:
        start, end = f"<!-- results:{suite} -->", f"<!-- /results:{suite} -->"
        if start in text and end in text:
            a = text.index(start) + len(start)
            b = text.index(end)
            text = text[:a] + "\n" + _no_html(summarize_suite(suite)) + text[b:]
    write_atomic(path, lambda f: f.write(text))
