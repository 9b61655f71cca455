"""Saved ``MLP`` models (any widths, e.g. after meSimp): written atomically with a SHA-256 checksum of
their weights, which ``load_model`` verifies, with every size in the file, BEFORE it allocates a model.

A cut-short or damaged file raises a ``ValueError`` naming the file and how to re-create it.
It needs the task's model (``tasks.mnist.MLP``), so it sits in the tasks layer, above the methods.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import nn

from .files import load_torch, write_atomic
from .tasks.mnist import MLP
from .validate import ArgumentError, check_path, check_size, check_sizes

__all__ = ["load_model", "save_model"]

FORMAT = "mesimp_lib.MLP/2"  # /2 adds "sha256"; /1 files (no checksum) still load, with a warning
_RESTORE = ("re-create it with `python -m mesimp_lib train ... --save-model PATH` (or `git checkout -- PATH` "
            "for a stored model)")


def _digest(header: dict, state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the sizes and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_model(model: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    """Save an ``MLP`` (any widths) with its shapes and a checksum, atomically (temp file + rename)."""
    header = {"format": FORMAT, "in_features": model.hidden[0].in_features, "widths": list(model.widths),
              "out_features": model.output.out_features}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {**header, "state_dict": state, "extra": extra or {}, "sha256": _digest(header, state)}
    return write_atomic(check_path("path", path), lambda f: torch.save(payload, f), binary=True)


def _expected_shapes(in_features: int, widths: list[int], out_features: int) -> dict[str, tuple]:
    sizes = [in_features, *widths]
    shapes = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"hidden.{i}.weight"], shapes[f"hidden.{i}.bias"] = (b, a), (b,)
    shapes["output.weight"], shapes["output.bias"] = (out_features, widths[-1]), (out_features,)
    return shapes


def _read(path: Path) -> dict:
    """The checked payload: readable, the right format, sizes that agree with the tensors, checksum."""
    payload = load_torch(path, _RESTORE)
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, "mesimp_lib.MLP/1"):
        raise ValueError(f"{path} is not a mesimp_lib MLP checkpoint (saved with mesimp_lib.save_model)")
    try:
        header = {"format": payload["format"], "in_features": check_size("in_features", payload["in_features"]),
                  "widths": check_sizes("widths", payload["widths"]),
                  "out_features": check_size("out_features", payload["out_features"])}
        state = payload["state_dict"]
    except (KeyError, ArgumentError) as e:
        raise ValueError(f"{path} has a damaged header ({e}): {_RESTORE}") from None
    want = _expected_shapes(header["in_features"], header["widths"], header["out_features"])
    have = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) and all(
        isinstance(v, torch.Tensor) for v in state.values()) else None
    if have != want:
        raise ValueError(f"{path}: its tensors do not match the sizes it states (hidden widths {header['widths']}): "
                         f"{_RESTORE}")
    if header["format"] == FORMAT:
        if payload.get("sha256") != _digest(header, state):
            raise ValueError(f"{path} fails its checksum (the weights were changed or damaged): {_RESTORE}")
    else:
        logging.getLogger(__name__).warning("%s was saved without a checksum (format /1): not verified", path)
    return payload


def load_model(path: str | Path, model: nn.Module | None = None, **mlp_kwargs) -> nn.Module:
    """Load a saved ``MLP``. Without ``model``, one is built at the saved widths (extra
    keyword arguments such as ``k`` go to ``MLP``). With ``model``, its shapes must match the
    checkpoint's; otherwise a ``ValueError`` says which. The file is verified first (readable,
    sizes consistent, checksum), so nothing is allocated from a damaged file."""
    payload = _read(check_path("path", path))
    if model is None:
        model = MLP(payload["in_features"], payload["widths"], out_features=payload["out_features"], **mlp_kwargs)
    want = {k: tuple(v.shape) for k, v in payload["state_dict"].items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != have:
        diff = [f"{k}: checkpoint {want.get(k)} vs model {have.get(k)}" for k in sorted(set(want) | set(have))
                if want.get(k) != have.get(k)]
        raise ValueError(
            f"checkpoint {path} (hidden widths {payload['widths']}) does not fit this model "
            f"(hidden widths {getattr(model, 'widths', '?')}): " + "; ".join(diff[:4])
        )
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in payload["state_dict"].items()})
    return model
