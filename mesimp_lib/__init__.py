"""meSimp Lab: minimal-effort back propagation (meProp), model simplification (meSimp).

The layers are the core: ``MePropLinear`` is a drop-in ``nn.Linear`` whose backward keeps
only the top-k entries of the output gradient; ``Simplifier`` deletes the hidden units that
are seldom among them (meSimp). Each module's docstring states the method precisely.
"""

from .checkpoint import load_model, save_model
from .meprop import MODES, MePropLinear, MePropStats, meprop_linear, resolve_k
from .mesimp import ActivityRecord, Simplifier
from .tasks.mnist import MLP, load_mnist

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "MODES",
    "ActivityRecord",
    "MePropLinear",
    "MePropStats",
    "Simplifier",
    "__version__",
    "load_mnist",
    "load_model",
    "meprop_linear",
    "resolve_k",
    "save_model",
]
