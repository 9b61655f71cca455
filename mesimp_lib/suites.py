"""The registry of stored experiment suites: each name -> a function giving {run name: TrainConfig}.

The paper's MNIST runs (meProp, meSimp, the same-size comparison) and the widget runs are defined here; the
MNIST grid in ``grid.py`` and the NLP and lazy-optimizer suites in ``nlp_grid.py``. Every suite but those in
``OWN_KERNEL`` runs with ``kernel="torch"``, the backward its stored runs were made with. ``experiments``
runs them, ``tables`` summarises them.
"""

from __future__ import annotations

from dataclasses import replace

from .config import AUTHORS, AUTHORS_MESIMP, TrainConfig
from .grid import GRID_SUITES, quick_runs
from .nlp_grid import NLP_SUITES
from .results import read_json, results_dir

__all__ = ["ALL", "OWN_KERNEL", "SAVE_MODELS", "SEEDS", "SUITES", "WIDGET_KS", "WIDGET_PRUNE_RATES"]

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
    "quick": quick_runs,
    "widget_shrinkage": _widget_shrinkage,
    **NLP_SUITES,
}.items()}
# what `experiment all` (make results) runs, in dependency order
ALL = [*[name for name in SUITES if name != "widget_shrinkage"], "mesimp_inference", "widgets"]
SAVE_MODELS = {"mesimp_mnist"}  # suites whose trained models are kept (small: they were simplified)
