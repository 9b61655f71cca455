"""Writing results: atomic JSON files and the provenance stored beside every number."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

__all__ = ["environment", "git_commit", "mean_sd", "read_json", "write_json_atomic"]


def write_json_atomic(path: str | Path, obj) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically: a temporary file in the same folder,
    flushed and fsynced, then renamed over the target. A crash leaves the old file or the
    new one, never half of either."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=1, sort_keys=False, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def mean_sd(values: list[float]) -> str:
    """Shares in [0, 1] as "mean ± sd" in percent (sd 0 for one value, "-" for none)."""
    if not values:
        return "-"
    m = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * m:.2f} ± {100 * sd:.2f}"


def read_json(path: str | Path):
    with open(path) as f:
        return json.load(f)


def git_commit(short: bool = False) -> str | None:
    """The repository's HEAD commit (with ``+dirty`` if the tree has changes), or None."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short" if short else "--verify", "HEAD"],
            cwd=root, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """Machine and software facts stored with every result."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        # MESIMP_COMMIT names the commit where the tree was copied without its .git (a lent machine)
        "commit": git_commit() or os.environ.get("MESIMP_COMMIT"),
        "command": " ".join(shlex.quote(a) for a in ["python", "-m", "mesimp_lib", *sys.argv[1:]])
        if Path(sys.argv[0]).name in ("__main__.py", "mesimp_lib")
        else " ".join(shlex.quote(a) for a in sys.argv),
    }
