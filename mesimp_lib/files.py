"""Files: every writer of results, models and tables writes atomically through ``write_atomic``, with
the user's umask; ``check_output_path`` checks a path before a long run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable

import torch

__all__ = ["check_output_path", "load_torch", "write_atomic"]


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (/proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def write_atomic(path: str | Path, write: Callable[[IO], None], binary: bool = False) -> Path:
    """Write ``path`` atomically with ``write(file)``: a temporary file in the same folder, flushed and
    fsynced, then renamed over the target, so a crash leaves the old file or the new one, never half of
    either. The file gets the permissions a plain ``open`` would give (0666 less the umask). Every
    writer of results, models and tables in the library goes through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_output_path(path: str | Path, what: str) -> Path:
    """Check BEFORE a long run that ``path`` can be written (its folder exists or can be made, and takes a
    new file; the path is not a folder). Raises ``ValueError`` naming ``what`` (e.g. "--json")."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"{what} {str(path)!r} cannot be written: {e.strerror or e}") from None
    return path


def load_torch(path: Path, restore: str):
    """``torch.load`` (``weights_only``) of a file we wrote; a cut-short or damaged one raises a ``ValueError``
    naming the file and ``restore`` (how to get it back); a missing one, ``FileNotFoundError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a file saved with torch.save") from None
    except Exception as e:  # noqa: BLE001 (a cut-short zip gives OSError, EOFError, RuntimeError, ...)
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {e or 'file ends early'}); it is cut short "
                         f"or damaged: {restore}") from e
