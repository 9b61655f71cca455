"""MNIST: the shipped IDX files, the paper's split, and the MNIST task (the MLP, its loss and accuracy).

Split (as the papers): dev = the first 5,000 training images, train = the last 55,000,
test = the 10,000 test images. Pixels scaled to [0, 1], flattened to 784.
Nothing is downloaded: the files ship in ``data/mnist`` and are checked by sha256.
The model is ``mlp.MLP`` (or the opt-in ``native_mlp.NativeMLP`` for ``kernel="native"``).
"""

from __future__ import annotations

import gzip
import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..meact import MeAct
from ..mesimp import Simplifier
from ..validate import check_path
from .base import Task, shuffled_batches
from .mlp import INITS, MLP, init_weights
from .native_mlp import NativeMLP
from .paths import data_root

__all__ = ["INITS", "MNIST_FILES", "MLP", "MnistData", "MnistTask", "accuracy", "build_mlp", "data_root",
           "init_weights", "load_mnist", "read_idx"]

# file name -> sha256 of the gzip file as shipped (data/README.md)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
}
DEV_SIZE = 5000


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


def build_mlp(config) -> MLP:
    """The MLP a ``TrainConfig`` describes: a ``NativeMLP`` (the whole network as one C++ node) for
    ``kernel="native"``, the plain ``MLP`` otherwise (the same parameters and numbers)."""
    cls = NativeMLP if config.kernel == "native" else MLP
    return cls(hidden=config.hidden, layers=config.layers, k=config.hidden_k, mode=config.hidden_mode,
               k_out=config.k_out, dropout=config.dropout, rescale=config.rescale, weight_grad=config.weight_grad,
               kernel=config.kernel, device=config.device)


class MnistTask(Task):
    """MNIST classification with the MLP: cross-entropy loss, accuracy on dev and test; meSimp prunes the
    hidden layers, meAct (``method="meact"``) observes their activations from ``meact_start_epoch`` on.

    ``data``: an ``MnistData`` (default: the shipped files, cached)."""

    name = "mnist"
    about = "MLP on MNIST"

    def __init__(self, config, data: MnistData | None = None):
        super().__init__(config)
        self.data = data if data is not None else load_mnist()
        self.model = build_mlp(config).to(self.device)
        x, y = self.data.train_x, self.data.train_y
        if config.train_limit is not None:
            x, y = x[: config.train_limit], y[: config.train_limit]
        self.train_x, self.train_y = x.to(self.device), y.to(self.device)
        self.steps_per_epoch = math.ceil(len(self.train_y) / config.batch_size)
        self.stats_layers = list(self.model.hidden)
        init_weights(self.model, config.init)  # "default" leaves nn.Linear's init
        if config.method == "mesimp":
            self.simplifier = Simplifier(self.model, config.prune_rate, config.realisation, config.record,
                                         config.count_zero_hits, config.min_units)
        self.meact = None
        if config.method == "meact":
            self.meact = MeAct(self.model, len(self.train_y), config.meact_threshold, config.meact_statistic)

    def batches(self, epoch: int):
        return shuffled_batches(len(self.train_y), self.config.batch_size, self.gen, self.device)

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.train_x[idx])  # (B, 10)
        return F.cross_entropy(logits, self.train_y[idx], reduction=self.config.loss_reduction)

    def evaluate(self) -> dict:
        d = self.data
        return {"dev_acc": accuracy(self.model, d.dev_x, d.dev_y), "test_acc": accuracy(self.model, d.test_x, d.test_y)}

    def dev_score(self) -> float:
        return accuracy(self.model, self.data.dev_x, self.data.dev_y)

    def start_epoch(self, epoch: int) -> None:
        if self.meact is not None and epoch == self.config.meact_start_epoch:
            self.meact.start()

    def before_step(self, idx: torch.Tensor) -> None:
        if self.meact is not None:
            self.meact.set_batch(idx)

    def finish(self, result: dict) -> dict:
        if self.meact is not None:
            self.meact.detach()
            result["meact"] = {**self.meact.stats(), "start_epoch": self.config.meact_start_epoch,
                               "note": "meAct is a reconstruction from the paper's text (no released code)"}
        return result
