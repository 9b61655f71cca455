"""MNIST: the shipped IDX files, the paper's split, and the MLP (784-500-500-10 by default).

Split (as the papers): dev = the first 5,000 training images, train = the last 55,000,
test = the 10,000 test images. Pixels scaled to [0, 1], flattened to 784.
Nothing is downloaded: the files ship in ``data/mnist`` and are checked by sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.modules import module as _nn_module

from ..meprop import MePropLinear, _fused, autocast_dtype, refuse_distributed, resolve_k
from ..validate import check_device, check_float, check_int, check_path, check_size, check_sizes

__all__ = ["INITS", "MNIST_FILES", "MLP", "init_weights", "MnistData", "accuracy", "data_root", "load_mnist", "read_idx"]

# file name -> sha256 of the gzip file as shipped (data/README.md)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
}
DEV_SIZE = 5000
INITS = ("default", "csharp", "pytorch_old")


def data_root() -> Path:
    """The data folder: ``$MESIMP_DATA_DIR`` if set, else the repository's ``data/``."""
    env = os.environ.get("MESIMP_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def _restore_hint(name: str) -> str:
    return (
        f"It ships with the repository as data/mnist/{name}: restore it with "
        f"`git checkout -- data/mnist/{name}` (or point MESIMP_DATA_DIR at a folder holding "
        f"mnist/). Nothing is downloaded at run time."
    )


def _checked_bytes(path: Path, sha256: str | None) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"MNIST file {path} is missing. {_restore_hint(path.name)}")
    raw = path.read_bytes()
    if sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != sha256:
            raise ValueError(
                f"MNIST file {path} is corrupted: sha256 {got}, expected {sha256}. {_restore_hint(path.name)}"
            )
    return raw


def read_idx(path: Path, sha256: str | None = None) -> np.ndarray:
    """Read a gzip-compressed IDX file (ubyte data) into a numpy array."""
    raw = _checked_bytes(check_path("path", path), sha256)
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise ValueError(f"MNIST file {path} is not a valid gzip file ({e}). {_restore_hint(Path(path).name)}") from e
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08 or not 1 <= (magic & 0xFF) <= 4:
        raise ValueError(f"MNIST file {path} is not an unsigned-byte IDX file (magic {magic:#010x})")
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"MNIST file {path} is truncated inside its header. {_restore_hint(Path(path).name)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(shape):  # Python ints: a product of four 32-bit sizes cannot overflow
        raise ValueError(f"MNIST file {path} has {body.size} values for its stated shape {shape} (truncated or "
                         f"damaged). {_restore_hint(Path(path).name)}")
    return body.reshape(shape)


@dataclass(frozen=True)
class MnistData:
    """The three splits as tensors: x float32 (N, 784) in [0, 1], y int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    dev_x: torch.Tensor
    dev_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def __repr__(self) -> str:
        return f"MnistData(train={len(self.train_y)}, dev={len(self.dev_y)}, test={len(self.test_y)}, features=784)"


@lru_cache(maxsize=2)
def _load(folder: str) -> MnistData:
    folder = Path(folder)
    arrays = {name: read_idx(folder / name, sha) for name, sha in MNIST_FILES.items()}

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    tx, ty = images(arrays["train-images-idx3-ubyte.gz"]), labels(arrays["train-labels-idx1-ubyte.gz"])
    return MnistData(
        train_x=tx[DEV_SIZE:],
        train_y=ty[DEV_SIZE:],
        dev_x=tx[:DEV_SIZE],
        dev_y=ty[:DEV_SIZE],
        test_x=images(arrays["t10k-images-idx3-ubyte.gz"]),
        test_y=labels(arrays["t10k-labels-idx1-ubyte.gz"]),
    )


def load_mnist(data_dir: str | Path | None = None) -> MnistData:
    """Load MNIST from ``data_dir`` (default ``data/mnist``), verifying every file's sha256.

    Cached per folder: repeated calls (notebooks, widgets) do not re-read the files.
    """
    folder = check_path("data_dir", data_dir, optional=True) or data_root() / "mnist"
    return _load(str(folder.resolve()))


def check_head_args(out_features: int, k_out, dropout: float, device) -> None:
    """The arguments every task model shares: ``k_out`` for its output layer, ``dropout`` in [0, 1), ``device``."""
    resolve_k(k_out, out_features, "k_out")
    check_float("dropout", dropout, 0.0, 1.0, hi_open=True)
    check_device("device", device, optional=True)


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

    With ``kernel="native"`` on every layer (and no meSimp hooks, meAct hook or active dropout) the
    whole network runs as one C++ autograd node, bit-equal to the per-layer native layers
    (``fuse_native = False`` turns it off); ``step_in_backward`` then applies a ``LazyAdam`` inside
    that backward.
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
        self.act_hook = None  # optional f(layer_index, h) -> h after each hidden activation (meAct)
        self.fuse_native = True  # kernel="native" everywhere: the whole network as one C++ autograd node

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

    def _whole_native(self, x: torch.Tensor) -> bool:
        """Whether this forward can run as ONE C++ autograd node (``meprop_mlp_native``): every layer
        kernel="native" without hooks (meSimp records take the per-layer path), no meAct hook, no active dropout,
        every layer with a bias and the same weight-gradient settings, and a graph to build. Bit-equal to the
        per-layer native layers; ``fuse_native = False`` turns it off."""
        layers = self.meprop_layers()
        if not self.fuse_native or x.dim() != 2 or self.act_hook is not None or not torch.is_grad_enabled():
            return False
        if self.training and not isinstance(self.dropout, nn.Identity):
            return False
        first = layers[0]
        for layer in layers:
            if layer.kernel != "native" or layer.hooks or layer.bias is None:
                return False
            if not (layer.weight.requires_grad and layer.bias.requires_grad):
                return False
            if layer._forward_hooks or layer._forward_pre_hooks or layer._backward_hooks or layer._backward_pre_hooks:
                return False  # PyTorch module hooks on a layer: they run on the per-layer path
            if (layer.weight_grad, layer.sparsify_bias, layer.count_zero_hits) != (
                    first.weight_grad, first.sparsify_bias, first.count_zero_hits):
                return False
        return True

    def __getstate__(self):
        """Pickling and deepcopy leave out the cached native call and the optimizer of ``step_in_backward``
        (a copy stores its gradients as usual until ``step_in_backward`` is called on it)."""
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_native_cache", None)
        state["_backward_opt"] = None
        return state

    def _native_key(self) -> tuple:
        """Everything the whole-network call depends on, read cheaply (ids of the tensors and of the record,
        which the cached call keeps alive, so no id is reused while it is cached)."""
        opt = self.__dict__.get("_backward_opt")
        ostate = None if opt is None else opt.state
        key = [self.fuse_native, self.training, self.__dict__["act_hook"] is None, id(self._modules["dropout"]),
               bool(_nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks
                    or _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks), id(opt)]
        for layer in (*self._modules["hidden"]._modules.values(), self._modules["output"]):
            d, prm = layer.__dict__, layer._parameters
            w, b, st = prm["weight"], prm["bias"], d["stats"]
            sd = st.__dict__
            key += [id(layer), id(w), id(b), w.shape, w.dtype, w.device, w.requires_grad,
                    b is not None and b.requires_grad, d["kernel"], d["_k"], d["mode"], d["rescale"],
                    d["sparsify_bias"], d["weight_grad"], d["count_zero_hits"], d["track_stats"], id(st),
                    id(sd.get("_native")), id(sd.get("counts")), bool(d["hooks"]),
                    bool(d["_forward_hooks"] or d["_forward_pre_hooks"] or d["_backward_hooks"]
                         or d["_backward_pre_hooks"])]
            if ostate is not None:  # the optimizer's state tensors themselves (cleared, reloaded, replaced)
                for p in (w, b):
                    ps = ostate.get(p)
                    key.append(None if not ps else (id(ps.get("exp_avg")), id(ps.get("exp_avg_sq")),
                                                    id(ps.get("step"))))
        return tuple(key)

    def _native_call(self, x: torch.Tensor):
        """The cached arguments of ``meprop_mlp_native`` for this model's current state, or None when the
        whole-network node does not apply (see ``_whole_native``)."""
        if x.dim() != 2 or not torch.is_grad_enabled() or autocast_dtype(x.device.type) is not None:
            return None  # under autocast the layers cast around their own native calls
        key = self._native_key()
        cached = self.__dict__.get("_native_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        call = self._native_args_all() if self._whole_native(x) else None
        self.__dict__["_native_cache"] = (key, call)
        return call

    def _native_args_all(self) -> tuple:
        layers = self.meprop_layers()
        args = [layer._native_args() for layer in layers]  # checks every layer can run natively
        params = [t for layer in layers for t in (layer.weight, layer.bias)]
        first = layers[0]
        opt, adam_state = self.__dict__.get("_backward_opt"), []
        if opt is not None and self._backward_opt_applies(opt, layers, params):
            for p in params:
                st = opt._state(p)
                adam_state += [st["exp_avg"], st["exp_avg_sq"], st["step"]]
        return (params, [a[0] for a in args], [a[1] for a in args], [a[2] for a in args], first.sparsify_bias,
                first.weight_grad == "sparse", first.count_zero_hits, [a[3] for a in args], [a[4] for a in args],
                [a[5] for a in args], adam_state)

    @staticmethod
    def _backward_opt_applies(opt, layers, params) -> bool:
        """The in-backward update is the optimizer's own only with row-sparse weight gradients (LazyAdam updates
        a dense gradient's every row) and while the optimizer holds exactly these parameters; otherwise the
        gradients are stored and ``opt.step()`` applies them."""
        if any(layer.weight_grad != "sparse" for layer in layers) or len(opt.param_groups) != 1:
            return False
        held = {id(p) for p in opt.param_groups[0]["params"]}
        return len(held) == len(params) and all(id(p) in held for p in params)

    def step_in_backward(self, optimizer) -> None:
        """Apply ``optimizer`` (a ``LazyAdam`` over exactly this model's parameters, one group) inside the
        backward: each layer's gradient goes straight into the update as soon as it is computed, and is never
        stored (``p.grad`` stays None, so ``optimizer.step()`` then finds nothing left to do). The same update
        as ``optimizer.step()`` after ``backward()``, bit for bit (tested); only the timing differs: no
        gradient tensors written and read back, no gradient accumulation, no separate optimizer pass.
        Gradients cannot be inspected, clipped or accumulated over several backward passes this way, and the
        loss must reach the parameters only through one forward of this model per backward (a penalty on the
        weights added to the loss would leave a stored gradient that ``optimizer.step()`` applies as a second
        update).

        It applies while the model runs as one native node (``kernel="native"`` and ``weight_grad="sparse"``
        everywhere, no meSimp hooks, no meAct, no PyTorch module hooks on the layers, no active dropout) and
        the optimizer holds exactly the model's parameters; otherwise backward stores the gradients as usual
        and ``optimizer.step()`` applies them. ``step_in_backward(None)`` turns it off. A lazy optimizer is
        not the paper's optimizer (see ``mesimp_lib.lazy``)."""
        from ..lazy import LazyAdam

        if optimizer is None:
            self.__dict__["_backward_opt"] = None
            return
        refuse_distributed("step_in_backward")
        if not isinstance(optimizer, LazyAdam):
            raise TypeError(f"step_in_backward takes a mesimp_lib.lazy.LazyAdam, not {type(optimizer).__name__}")
        mine = [id(p) for p in self.parameters()]
        groups = optimizer.param_groups
        if len(groups) != 1 or sorted(id(p) for p in groups[0]["params"]) != sorted(mine):
            raise ValueError("step_in_backward: the optimizer must have one parameter group holding exactly this "
                             "model's parameters")
        dense = [i for i, layer in enumerate(self.meprop_layers()) if layer.weight_grad != "sparse"]
        if dense:
            raise ValueError(f"step_in_backward needs weight_grad='sparse' on every layer (layers {dense} have "
                             "another): LazyAdam updates every row of a dense weight gradient")
        self.__dict__["_backward_opt"] = optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        call = self._native_call(x)
        if call is not None:
            if x.shape[-1] != call[0][0].shape[1]:
                raise ValueError(f"input has {x.shape[-1]} features in its last dimension; this model expects "
                                 f"in_features={call[0][0].shape[1]}")
            opt = self.__dict__.get("_backward_opt")
            if opt is not None or call[5]:  # an in-backward step or row-sparse weight gradients
                refuse_distributed("step_in_backward" if opt is not None else "weight_grad='sparse'")
            if opt is None:
                hp = []
            else:  # read every step: a scheduler may have changed the learning rate
                group = opt.param_groups[0]
                hp = [group["lr"], group["betas"][0], group["betas"][1], group["eps"]]
            return _fused().meprop_mlp_native(x, *call, hp)
        for i, layer in enumerate(self.hidden):
            h = torch.relu(layer(x))
            if self.act_hook is not None:
                h = self.act_hook(i, h)
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
    if scheme not in INITS:
        raise ValueError(f"init={scheme!r} is not allowed; allowed: {', '.join(INITS)}")
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


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of correctly classified examples (model put in eval mode and restored)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(y), batch_size):
        pred = model(x[i : i + batch_size].to(device)).argmax(1)
        correct += (pred == y[i : i + batch_size].to(device)).sum().item()
    model.train(was_training)
    return correct / max(1, len(y))
