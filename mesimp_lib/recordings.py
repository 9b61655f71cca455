"""Small recorded runs that the notebook widgets browse instantly.

    active_paths    MLP 784-64-64-10 trained with per-example meProp for k in PATH_KS and
                    dropout in PATH_DROPOUTS on the first 10,000 training images (2 epochs,
                    batch 50, Adam, seed 1): weights and per-unit selection counts at a few
                    training steps -> data/results/widgets/active_paths.pt

The layer-shrinkage widget reads the ``widget_shrinkage`` suite (ordinary training JSON,
run by ``python -m mesimp_lib experiment widget_shrinkage``). Everything here is
re-made by ``python -m mesimp_lib experiment widgets`` (about a minute on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .files import load_torch, write_atomic
from .tasks.mnist import MLP, data_root, load_mnist

__all__ = ["PATH_DROPOUTS", "PATH_KS", "PATH_STEPS", "PathObserver", "load_active_paths", "record_active_paths",
           "widgets_dir"]

PATH_KS = (4, 8, 16)
PATH_STEPS = (0, 25, 100, 400)  # snapshots after this many training steps
PATH_WIDTH = 64
# no dropout, and 0.2: the rate with the best mean dev accuracy of the dense baseline in the stored
# ``dropout`` suite (data/results/dropout, 3 seeds)
PATH_DROPOUTS = (0.0, 0.2)
FORMAT = "mesimp_lib.active_paths/2"  # /1 (no dropout key, runs by k) still loads


def widgets_dir() -> Path:
    return data_root() / "results" / "widgets"


class PathObserver:
    """Keeps the last output gradient and selection a meProp layer saw (for drawing paths)."""

    def __init__(self):
        self.g = None
        self.selection = None

    def observe(self, g, selection, plan) -> None:
        self.g = g.detach().clone()
        self.selection = selection


def record_active_paths(path: Path | None = None, seed: int = 1) -> Path:
    data = load_mnist()
    x, y = data.train_x[:10_000], data.train_y[:10_000]
    runs = {}
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for p in PATH_DROPOUTS:
            runs[p] = {k: _record_one(x, y, k, p, seed) for k in PATH_KS}
    finally:
        torch.set_num_threads(old)
    payload = {
        "format": FORMAT,
        "width": PATH_WIDTH,
        "dropouts": list(PATH_DROPOUTS),
        "ks": list(PATH_KS),
        "steps": list(PATH_STEPS),
        "runs": runs,
        "command": "python -m mesimp_lib experiment widgets",
        "note": ("MLP 784-64-64-10, per-example meProp, first 10,000 training images, batch 50, Adam 1e-3, seed 1 "
                 "(same initial weights and batch order for every k and dropout rate); runs[dropout][k]"),
    }
    return write_atomic(path or widgets_dir() / "active_paths.pt", lambda f: torch.save(payload, f), binary=True)


def _record_one(x: torch.Tensor, y: torch.Tensor, k: int, dropout: float, seed: int) -> list[dict]:
    """Snapshots (at PATH_STEPS) of one run: 2 epochs, batch 50, Adam 1e-3."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MLP(hidden=PATH_WIDTH, layers=2, k=k, mode="per_example", dropout=dropout, kernel="torch")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    snaps, step = [], 0
    for _epoch in range(2):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 50):
            if step in PATH_STEPS:
                snaps.append(_snapshot(model, step))
            idx = perm[i : i + 50]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            step += 1
    if step in PATH_STEPS:
        snaps.append(_snapshot(model, step))
    return snaps


def _snapshot(model: MLP, step: int) -> dict:
    return {
        "step": step,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "counts": [layer.stats.counts.clone() for layer in model.hidden],
        "examples": model.hidden[0].stats.examples,
    }


def load_active_paths(path: Path | None = None) -> dict:
    """The recording as ``{"width", "dropouts", "ks", "steps", "runs": {dropout: {k: [snapshot, ...]}}, ...}``
    (an old format /1 file, recorded without dropout, loads as ``dropouts == [0.0]``)."""
    path = path or widgets_dir() / "active_paths.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: it ships with the repository (git checkout -- {path}); "
            "re-make it with `python -m mesimp_lib experiment widgets`"
        )
    rec = load_torch(path, f"restore it with `git checkout -- {path}` or re-make it with "
                           "`python -m mesimp_lib experiment widgets`")
    if "dropouts" not in rec:  # format /1: one run per k, trained without dropout
        rec = {**rec, "dropouts": [0.0], "runs": {0.0: rec["runs"]}}
    return rec
