"""The MLP of the MNIST experiments: ``MePropLinear`` hidden layers with ReLU, a dense output layer.

The teaching model (notebooks 01-05): read ``forward`` top to bottom. ``init_weights`` gives
the papers' initialisation schemes. The whole network as one C++ autograd node is the
opt-in ``native_mlp.NativeMLP`` next to it; the data and the task are in ``mnist.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..meprop import MePropLinear
from ..validate import check_choice, check_int, check_size, check_sizes
from .base import check_head_args

__all__ = ["INITS", "MLP", "init_weights"]

INITS = ("default", "csharp", "pytorch_old")


class MLP(nn.Module):
    """A ReLU MLP with meProp on the hidden layers and a dense output layer by default.

    Args:
        in_features, out_features: 784 and 10 for MNIST.
        hidden: width of every hidden layer (int), or a list of widths (one per layer).
        layers: number of hidden layers when ``hidden`` is an int.
        k, mode: meProp for the hidden layers (None = dense backward).
        k_out: meProp for the output layer (None = dense, as every original code path).
        dropout: dropout after every hidden activation.
        **layer_kwargs: passed to every ``MePropLinear`` (rescale, weight_grad, kernel, ...).

    ``observe_activations(observer)`` lets an activation observer (meAct's ``MeAct``) see and
    replace each hidden activation in training. The whole network as one C++ autograd node
    (``kernel="native"``) is the opt-in ``tasks.native_mlp.NativeMLP`` (same parameters and
    state_dict keys).
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden=500,
        layers: int = 2,
        out_features: int = 10,
        k=None,
        mode: str = "per_example",
        k_out=None,
        dropout: float = 0.0,
        device=None,
        **layer_kwargs,
    ):
        super().__init__()
        if isinstance(hidden, (list, tuple)):
            widths = check_sizes("hidden", hidden)
        else:
            widths = [check_size("hidden", hidden)] * check_int("layers", layers, 1)
        in_features, out_features = check_size("in_features", in_features), check_size("out_features", out_features)
        check_head_args(out_features, k_out, dropout, device)
        sizes = [in_features, *widths]
        self.hidden = nn.ModuleList(
            MePropLinear(a, b, k, mode, device=device, **layer_kwargs) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.output = MePropLinear(widths[-1], out_features, k_out, mode, device=device, **layer_kwargs)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._activation_observer = None  # see observe_activations

    @property
    def widths(self) -> list[int]:
        """Current hidden widths."""
        return [layer.out_features for layer in self.hidden]

    def meprop_layers(self) -> list[MePropLinear]:
        return [*self.hidden, self.output]

    def set_k(self, k, k_out=None) -> None:
        """Change k on every hidden layer (and the output layer's ``k_out``)."""
        for layer in self.hidden:
            layer.k = k
        self.output.k = k_out

    def observe_activations(self, observer) -> None:
        """Hand every hidden activation to ``observer.activation(layer_index, h) -> h`` (after the ReLU,
        before dropout); what it returns goes on to the next layer. meAct's ``MeAct`` is such an observer
        (it calls this itself); ``None`` removes it. One observer at a time."""
        if observer is not None and not callable(getattr(observer, "activation", None)):
            raise TypeError(f"observer must have a method activation(layer_index, h) -> h; got "
                            f"{type(observer).__name__}")
        self._activation_observer = observer

    @property
    def activation_observer(self):
        """The observer set by ``observe_activations`` (None: plain activations)."""
        return self._activation_observer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        observer = self._activation_observer
        for i, layer in enumerate(self.hidden):
            h = torch.relu(layer(x))  # (B, width_i)
            if observer is not None:
                h = observer.activation(i, h)
            x = self.dropout(h)
        return self.output(x)

    def to_sequential(self) -> nn.Sequential:
        """A plain ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` (inference; no dropout)."""
        mods: list[nn.Module] = []
        for layer in self.hidden:
            mods += [layer.to_linear(), nn.ReLU()]
        mods.append(self.output.to_linear())
        return nn.Sequential(*mods)


@torch.no_grad()
def init_weights(model: nn.Module, scheme: str = "default") -> None:
    """Re-initialise every layer of ``model.meprop_layers()`` in place from torch's global RNG.

    default      leave ``nn.Linear``'s init (W, b ~ U(+-1/sqrt(fan_in)); W with a = sqrt(5) Kaiming)
    csharp       the authors' C# (``GlorotNormalInit``): W ~ Normal(0, sd = sqrt(6 / (fan_in + fan_out))),
                 the Glorot-uniform bound used as a normal sd (3-4x PyTorch's), bias 0
    pytorch_old  the authors' old PyTorch port (``modules.Linear``): W and b ~ U(+-1/sqrt(fan_out))
    """
    check_choice("init", scheme, INITS)
    if scheme == "default":
        return
    for layer in model.meprop_layers():
        fan_out, fan_in = layer.weight.shape
        if scheme == "csharp":
            layer.weight.normal_(0.0, (6.0 / (fan_in + fan_out)) ** 0.5)
            if layer.bias is not None:
                layer.bias.zero_()
        else:
            bound = 1.0 / fan_out**0.5
            layer.weight.uniform_(-bound, bound)
            if layer.bias is not None:
                layer.bias.uniform_(-bound, bound)
