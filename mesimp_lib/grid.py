"""The experiment grid behind the paper's claims (MNIST, Adam, 784-500-500-10, 20 epochs,
mini-batch 50 as the authors' PyTorch code, seeds 1-3):

    k_grid          accuracy against the backprop ratio: k in KS, top-k (per example),
                    random-k (unscaled, as the authors) and random-k rescaled; dense baseline
    dense_h_k       a dense MLP whose hidden layers have h = k units
    dropout         the dense baseline with dropout in DROPOUTS (best rate chosen on dev)
    dropout_meprop  meProp (k in DROPOUT_KS) at that best rate
    meact           meAct (a reconstruction) against the same-seed baseline
    quick           a few entries on 2,000 images, for `make results-quick` and a test

Each suite is a function giving a dict name -> TrainConfig (registered in ``suites.SUITES``);
``experiments.run_suite`` runs the missing ones, ``tables_grid`` makes their tables.
"""

from __future__ import annotations

import statistics

from .config import TrainConfig
from .results import read_json, results_dir

__all__ = ["DROPOUTS", "DROPOUT_KS", "GRID_SUITES", "KS", "SEEDS", "best_dropout", "quick_runs"]

SEEDS = (1, 2, 3)
KS = (5, 10, 20, 40, 80, 160)
DROPOUTS = (0.0, 0.1, 0.2, 0.3, 0.5)
DROPOUT_KS = (20, 40)
COMMON = dict(batch_size=50, epochs=20, evals_per_epoch=2)
QUICK = dict(batch_size=50, epochs=2, train_limit=2000, evals_per_epoch=2)


def _k_grid() -> dict[str, TrainConfig]:
    runs = {}
    for s in SEEDS:
        runs[f"dense-s{s}"] = TrainConfig(method="dense", seed=s, **COMMON)
        for k in KS:
            runs[f"topk-k{k}-s{s}"] = TrainConfig(method="meprop", k=k, mode="per_example", seed=s, **COMMON)
            runs[f"random-k{k}-s{s}"] = TrainConfig(method="random", k=k, seed=s, **COMMON)
            runs[f"random-rescaled-k{k}-s{s}"] = TrainConfig(method="random", k=k, rescale=True, seed=s, **COMMON)
    return runs


def _dense_h_k() -> dict[str, TrainConfig]:
    return {f"dense-h{k}-s{s}": TrainConfig(method="dense", hidden=k, seed=s, **COMMON) for s in SEEDS for k in KS}


def _dropout() -> dict[str, TrainConfig]:
    return {f"dense-p{p}-s{s}": TrainConfig(method="dense", dropout=p, seed=s, **COMMON) for s in SEEDS for p in DROPOUTS}


def best_dropout() -> float | None:
    """The dropout rate with the best mean dev accuracy of the dense baseline (None if not run)."""
    means = {}
    for p in DROPOUTS:
        files = [results_dir("dropout") / f"dense-p{p}-s{s}.json" for s in SEEDS]
        if not all(f.exists() for f in files):
            return None
        means[p] = statistics.mean(read_json(f)["best_dev_acc"] for f in files)
    return max(means, key=lambda p: (means[p], -p))


def _dropout_meprop() -> dict[str, TrainConfig]:
    p = best_dropout()
    if p is None:
        return {}
    return {f"meprop-k{k}-p{p}-s{s}": TrainConfig(method="meprop", k=k, dropout=p, seed=s, **COMMON)
            for s in SEEDS for k in DROPOUT_KS}


def _meact() -> dict[str, TrainConfig]:
    runs = {}
    for s in SEEDS:
        runs[f"baseline-s{s}"] = TrainConfig(method="dense", seed=s, rows_every=25, **COMMON)
        runs[f"meact-s{s}"] = TrainConfig(method="meact", seed=s, rows_every=25, meact_start_epoch=5,
                                         meact_threshold=1.0, **COMMON)
    return runs


def quick_runs() -> dict[str, TrainConfig]:
    """The `quick` suite: a few entries on 2,000 images (`make results-quick` re-computes them)."""
    return {
        "dense": TrainConfig(method="dense", seed=1, **QUICK),
        "topk-k20": TrainConfig(method="meprop", k=20, seed=1, **QUICK),
        "random-k20": TrainConfig(method="random", k=20, seed=1, **QUICK),
        "dense-h20": TrainConfig(method="dense", hidden=20, seed=1, **QUICK),
    }


GRID_SUITES = {
    "k_grid": _k_grid,
    "dense_h_k": _dense_h_k,
    "dropout": _dropout,
    "dropout_meprop": _dropout_meprop,
    "meact": _meact,
}
