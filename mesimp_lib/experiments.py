"""Stored experiments, the runner: a suite's missing runs run resumably, stored runs re-computed and checked.

``python -m mesimp_lib experiment meprop_mnist --jobs 2`` runs every run of the suite
whose result file is missing, each as its own ``python -m mesimp_lib train ... --json``
process (so the stored command is exactly what produced the file), writing each result
atomically as it finishes: an interrupted suite loses nothing that finished.
``--verify`` re-computes the stored runs in this process. The suites are defined in ``suites`` (with
``grid`` and ``nlp_grid``), their tables in ``tables`` (``python -m mesimp_lib summarize --readme README.md``
regenerates them from the JSON); the names the notebooks use are re-exported here.
"""

from __future__ import annotations

import shlex
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from .children import ChildGroup
from .config import TrainConfig, stored_config
from .results import read_json, results_dir, write_json_atomic
from .suites import ALL, SAVE_MODELS, SUITES, WIDGET_KS, WIDGET_PRUNE_RATES
from .tables import summarize_suite, update_readme
from .validate import check_choice

__all__ = ["ALL", "SUITES", "WIDGET_KS", "WIDGET_PRUNE_RATES", "inference_speed", "measure_inference",
           "results_dir", "run_suite", "summarize_suite", "update_readme", "verify_suite"]


def _command(cfg: TrainConfig, path: Path, save_model: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "mesimp_lib", *shlex.split(cfg.to_cli())[3:], "--json", str(path), "--quiet"]
    if save_model and cfg.method == "mesimp":
        cmd += ["--save-model", str(path.with_suffix(".pt"))]
    return cmd


def _same_config(stored: dict | None, cfg: TrainConfig) -> bool:
    """A stored run counts as done if its config equals ``cfg`` (fields added to TrainConfig
    since it was written take the value the run had: ``config.stored_config``)."""
    if not stored:
        return False
    try:
        # the device a run was made on does not change what it computes (--device on `experiment`)
        return stored_config(stored, device="cpu") == replace(cfg, device="cpu")
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
    check_choice("suite", suite, [*SUITES, "mesimp_inference", "widgets"])
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
