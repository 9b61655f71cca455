"""Stored experiments for the papers' NLP tasks on UD English EWT, and the lazy-optimizer runs.

Suites (``python -m mesimp_lib experiment SUITE --jobs N``):

- ``pos_ud``: the BiLSTM POS tagger (h=500 per direction, UPOS): dense, meProp k=5, k=10,
  k=20 on the gates, meSimp k=20 at the prune rate chosen on dev in ``pos_ud_rates``.
- ``pos_ud_rates``: meSimp k=20 at several prune rates, seed 1; the rate with the best dev
  accuracy is the one ``pos_ud`` uses (``chosen_rate``).
- ``parse_ud``: the Chen & Manning parser (hidden 500, cube): dense, meProp k=20, meSimp
  k=20 at the rate chosen in ``parse_ud_rates``.
- ``lazy_mnist``: meProp k=20 per example at the paper's MNIST setting (batch 10) with the
  lazy Adam (a departure from the paper), beside ``meprop_mnist``'s standard Adam runs.

The suites are registered in ``suites.SUITES``; their tables are in ``tables_nlp``.
"""

from __future__ import annotations

from .config import TrainConfig
from .results import read_json, results_dir

__all__ = ["NLP_SUITES", "chosen_rate"]

SEEDS = (1, 2, 3)

# Settings (chosen so a run takes minutes on one core; see each suite's README paragraph)
POS = dict(task="pos", hidden=500, batch_size=32, epochs=4, evals_per_epoch=2, tagset="upos", lr=0.004)
POS_MESIMP = dict(cycle_epochs=1, prunes_per_epoch=8)
POS_RATES = (0.05, 0.1, 0.2)
PARSE = dict(task="parse", hidden=500, batch_size=256, epochs=6, evals_per_epoch=2)
PARSE_MESIMP = dict(cycle_epochs=1, prunes_per_epoch=8)
PARSE_RATES = (0.05, 0.1)


def chosen_rate(rates_suite: str, default: float = 0.1) -> tuple[float, dict | None]:
    """The prune rate whose seed-1 run has the best dev score (ties: the larger rate, i.e. the
    smaller model). Returns (rate, {rate: dev}) or (default, None) before those runs exist."""
    devs = {}
    for f in sorted(results_dir(rates_suite).glob("*.json")):
        r = read_json(f)
        devs[r["config"]["prune_rate"]] = r["best_dev_acc"]
    if not devs:
        return default, None
    best = max(devs.items(), key=lambda kv: (kv[1], kv[0]))[0]
    return best, devs


def _pos_ud() -> dict[str, TrainConfig]:
    rate, _ = chosen_rate("pos_ud_rates")
    runs = {}
    for seed in SEEDS:
        runs[f"dense-s{seed}"] = TrainConfig(method="dense", k=None, seed=seed, **POS)
        for k in (5, 10, 20):
            runs[f"meprop-k{k}-s{seed}"] = TrainConfig(method="meprop", k=k, seed=seed, **POS)
        runs[f"mesimp-k20-s{seed}"] = TrainConfig(method="mesimp", k=20, prune_rate=rate, seed=seed, **POS, **POS_MESIMP)
    return runs


def _pos_ud_rates() -> dict[str, TrainConfig]:
    return {f"mesimp-k20-p{p}-s1": TrainConfig(method="mesimp", k=20, prune_rate=p, seed=1, **POS, **POS_MESIMP)
            for p in POS_RATES}


def _parse_ud() -> dict[str, TrainConfig]:
    rate, _ = chosen_rate("parse_ud_rates")
    runs = {}
    for seed in SEEDS:
        runs[f"dense-s{seed}"] = TrainConfig(method="dense", k=None, seed=seed, **PARSE)
        runs[f"meprop-k20-s{seed}"] = TrainConfig(method="meprop", k=20, seed=seed, **PARSE)
        runs[f"mesimp-k20-s{seed}"] = TrainConfig(method="mesimp", k=20, prune_rate=rate, seed=seed, **PARSE,
                                                  **PARSE_MESIMP)
    return runs


def _parse_ud_rates() -> dict[str, TrainConfig]:
    return {f"mesimp-k20-p{p}-s1": TrainConfig(method="mesimp", k=20, prune_rate=p, seed=1, **PARSE, **PARSE_MESIMP)
            for p in PARSE_RATES}


LAZY_MNIST = dict(method="meprop", mode="per_example", k=20, batch_size=10, epochs=20, optimizer="lazy_adam",
                  weight_grad="sparse", kernel="auto")


def _lazy_mnist() -> dict[str, TrainConfig]:
    return {f"meprop-per_example-k20-lazy_adam-s{seed}": TrainConfig(seed=seed, **LAZY_MNIST) for seed in SEEDS}


NLP_SUITES = {
    "pos_ud_rates": _pos_ud_rates,
    "pos_ud": _pos_ud,
    "parse_ud_rates": _parse_ud_rates,
    "parse_ud": _parse_ud,
    "lazy_mnist": _lazy_mnist,
}
