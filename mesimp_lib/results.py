"""Results: atomic JSON files, the provenance stored beside every number, and where the stored suites live
(``results_dir``, ``load_groups``: read by the suite definitions, the runner and the tables)."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from .files import write_atomic
from .tasks.mnist import data_root

__all__ = ["environment", "final_widths", "finite_or_none", "git_commit", "load_groups", "mean_sd", "read_json",
           "results_dir", "write_json_atomic"]


def results_dir(suite: str) -> Path:
    """The folder of a stored suite's result files: ``data/results/<suite>``."""
    return data_root() / "results" / suite


def load_groups(suite: str) -> dict[str, list[dict]]:
    """A stored suite's results grouped by run name without its seed (``dense-s1``, ``dense-s2`` -> ``dense``)."""
    groups: dict[str, list[dict]] = {}
    restore = f"python -m mesimp_lib experiment {suite}"
    for f in sorted(results_dir(suite).glob("*.json")):
        groups.setdefault(re.sub(r"-s\d+$", "", f.stem), []).append(read_json(f, restore))
    return groups


def final_widths(r: dict) -> list[int]:
    """A stored run's hidden widths at its end (after meSimp's prunes; the starting widths otherwise)."""
    return r.get("final_widths") or r["widths"]


def write_json_atomic(path: str | Path, obj) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (``write_atomic``). NaN / inf are refused (not JSON):
    pass results through ``finite_or_none`` first."""
    text = json.dumps(obj, indent=1, sort_keys=False, allow_nan=False) + "\n"
    return write_atomic(path, lambda f: f.write(text))


def finite_or_none(obj, where: str = "") -> tuple[object, list[str]]:
    """``obj`` with every NaN / inf float replaced by None (JSON null), and the paths of those values
    (e.g. ``history[3].train_loss``), so that a run that diverged is still written, and says so."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None, [where or "."]
    if isinstance(obj, dict):
        out, bad = {}, []
        for k, v in obj.items():
            out[k], b = finite_or_none(v, f"{where}.{k}" if where else str(k))
            bad += b
        return out, bad
    if isinstance(obj, (list, tuple)):
        out, bad = [], []
        for i, v in enumerate(obj):
            x, b = finite_or_none(v, f"{where}[{i}]")
            out.append(x)
            bad += b
        return out, bad
    return obj, []


def mean_sd(values: list[float]) -> str:
    """Shares in [0, 1] as "mean ± sd" in percent; one value alone (no spread to show) without "± sd",
    "-" for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f} (one seed)"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def read_json(path: str | Path, restore: str | None = None):
    """Read a JSON file; a cut-short or corrupted one raises a ``ValueError`` naming the file, the
    line and how to restore it (``restore``: a command that re-creates it)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        problem = f"is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
    except UnicodeDecodeError as e:
        problem = f"is not UTF-8 text (byte {e.start}: {e.reason})"
    how = f"`git checkout -- {path}` if it is a stored result, or delete it and re-run" + (
        f" `{restore}`" if restore else " the command that wrote it")
    raise ValueError(f"{path} {problem}: it was probably cut short or damaged; restore it with {how}")


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
