"""Notebook set-up: one call at the top of every tutorial."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

__all__ = ["setup_notebook"]


def setup_notebook(seed: int = 0, threads: int = 1) -> None:
    """Reproducible, quiet defaults for a tutorial: 1 torch thread (same digits every run),
    seeded RNGs, plotly figures stored as compact JSON, warnings-only logging. Training
    calls seed themselves again inside; this covers the notebook's own random tensors."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype")
    logging.basicConfig(level=logging.WARNING)
