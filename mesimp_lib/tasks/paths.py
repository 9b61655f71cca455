"""Where the shipped data lives: one place every task reads its files from.

``data_root()`` is the repository's ``data/`` folder, or ``$MESIMP_DATA_DIR`` when it is set
(MNIST under ``mnist/``, UD English EWT under ``ud_english_ewt/``, stored results under
``results/``). Nothing is downloaded at run time.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root"]


def data_root() -> Path:
    """The data folder: ``$MESIMP_DATA_DIR`` if set, else the repository's ``data/``."""
    env = os.environ.get("MESIMP_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"
