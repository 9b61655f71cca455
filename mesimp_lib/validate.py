"""Argument checks at the public boundary: one clear error naming the argument, the value and
what is allowed, and no silent coercion (``"5"``, ``True`` and ``2.7`` are not ints; ``"False"``
is not a bool).

Every check returns the value in its plain Python type (a NumPy integer becomes an ``int``) and
raises ``ArgumentError``, which is both a ``ValueError`` and a ``TypeError``, so callers may catch
either; the command line turns it into exit status 2.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import torch

__all__ = ["ArgumentError", "MAX_SIZE", "SEED_MAX", "check_bool", "check_choice", "check_device", "check_dtype", "check_float",
           "check_int", "check_path", "check_size", "check_sizes",
           "plain_number", "refuse"]

MAX_SIZE = 2**31 - 1  # widths, counts and sizes: the kernels index with 32-bit ints
SEED_MAX = 2**64 - 1  # torch.manual_seed takes [0, 2**64)
DEVICE_TYPES = ("cpu", "cuda")


class ArgumentError(ValueError, TypeError):
    """A bad argument: its name (``.name``, e.g. "hidden" or "hidden[1]"), its value and what is allowed."""

    def __init__(self, message: str, name: str | None = None):
        super().__init__(message)
        self.name = name


def refuse(name: str, value, allowed: str):
    """Raise the one error every check raises: the argument, its value and what is allowed."""
    raise ArgumentError(f"{name}={value!r} is not allowed; allowed: {allowed}", name)


def _range_text(minimum, maximum, lo_open: bool = False, hi_open: bool = False) -> str:
    if minimum is not None and maximum is not None:
        return f"in {'(' if lo_open else '['}{minimum}, {maximum}{')' if hi_open else ']'}"
    if minimum is not None:
        return f"{'>' if lo_open else '>='} {minimum}"
    if maximum is not None:
        return f"{'<' if hi_open else '<='} {maximum}"
    return ""


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = MAX_SIZE, *,
              optional: bool = False) -> int | None:
    """An int (not a bool, a float or a string) in [minimum, maximum]; None too if ``optional``."""
    allowed = ("None or " if optional else "") + f"an int {_range_text(minimum, maximum)}".rstrip()
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        refuse(name, value, allowed)
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        refuse(name, value, allowed)
    return value


def check_size(name: str, value) -> int:
    """A width, count or size: an int in [1, MAX_SIZE]."""
    return check_int(name, value, 1)


def check_sizes(name: str, value) -> list[int]:
    """A non-empty list (or tuple) of sizes."""
    if not isinstance(value, (list, tuple)) or not value:
        refuse(name, value, f"an int in [1, {MAX_SIZE}] or a non-empty list of them")
    return [check_int(f"{name}[{i}]", v, 1) for i, v in enumerate(value)]


def check_float(name: str, value, minimum: float | None = None, maximum: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False, optional: bool = False) -> float | None:
    """A finite real number (an int or a float, not a bool or a string) in the range given; None too if
    ``optional``. ``lo_open`` / ``hi_open`` exclude the bounds. Returned as a ``float``."""
    allowed = ("None or " if optional else "") + f"a finite number {_range_text(minimum, maximum, lo_open, hi_open)}"
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        refuse(name, value, allowed.rstrip())
    value = float(value)
    if minimum is not None and (value < minimum or (lo_open and value == minimum)):
        refuse(name, value, allowed)
    if maximum is not None and (value > maximum or (hi_open and value == maximum)):
        refuse(name, value, allowed)
    return value


def check_bool(name: str, value, *, optional: bool = False) -> bool | None:
    """True or False (a NumPy bool too), not 0 / 1 or "False"; None too if ``optional``."""
    if value is None and optional:
        return None
    if type(value).__name__ not in ("bool", "bool_"):
        refuse(name, value, ("None, " if optional else "") + "True or False")
    return bool(value)


def check_choice(name: str, value, choices, *, optional: bool = False) -> str | None:
    """One of ``choices`` (strings); None too if ``optional``."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or value not in choices:
        refuse(name, value, ("None, " if optional else "") + ", ".join(map(str, choices)))
    return value


def check_device(name: str, value, *, optional: bool = False) -> str | torch.device | None:
    """'cpu', 'cuda' or 'cuda:N' (a string or a ``torch.device``), CUDA only when one is available."""
    if value is None and optional:
        return None
    allowed = ("None, " if optional else "") + "'cpu'" + (" or 'cuda' / 'cuda:N'" if torch.cuda.is_available() else
                                                          " (no CUDA device is available here)")
    if not isinstance(value, (str, torch.device)):
        refuse(name, value, allowed)
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        refuse(name, value, allowed)
    if dev.type not in DEVICE_TYPES or (dev.type == "cuda" and (
            not torch.cuda.is_available() or (dev.index is not None and dev.index >= torch.cuda.device_count()))):
        refuse(name, value, allowed)
    return value


def plain_number(value):
    """A NumPy (or other) integer as an ``int``, a real number as a ``float``; anything else unchanged."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
        return float(value)
    return value


def check_path(name: str, value, *, optional: bool = False) -> Path | None:
    """A file or folder name: a non-empty ``str`` or ``os.PathLike`` (not bytes, not a number); None too if
    ``optional``. Whether it exists is the reader's business (it raises ``FileNotFoundError`` naming it)."""
    if value is None and optional:
        return None
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes) or not str(value) or "\0" in str(value):
        refuse(name, value, ("None or " if optional else "") + "a non-empty path (str or pathlib.Path)")
    return Path(value)


def check_dtype(name: str, value, *, optional: bool = True) -> torch.dtype | None:
    """A floating-point ``torch.dtype`` (float16 / bfloat16 / float32 / float64); None too if ``optional``."""
    if value is None and optional:
        return None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        refuse(name, value, ("None or " if optional else "") + "a floating torch.dtype such as torch.float32")
    return value
