"""meSimp Lab: minimal-effort back propagation (meProp), model simplification (meSimp).

The layers are the core: ``MePropLinear`` is a drop-in ``nn.Linear`` whose backward keeps
only the top-k entries of the output gradient. See METHODS.md-derived docs in each module.
"""

from .meprop import MODES, MePropLinear, MePropStats, meprop_linear, resolve_k
from .tasks.mnist import MLP, load_mnist

__version__ = "0.1.0"

__all__ = ["MLP", "MODES", "MePropLinear", "MePropStats", "__version__", "load_mnist", "meprop_linear", "resolve_k"]
