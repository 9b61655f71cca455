"""Fused native meProp backward kernels, compiled on first use. Taught in notebook 09 (speed).

``kernels()`` returns the compiled extension, or None when it cannot be built here (no C++
compiler or ninja, a non-CPU build...); the pure-PyTorch path in ``meprop.py`` is then used. One
log line (logger ``mesimp_lib.fused``) says which path is active. Set ``MESIMP_FUSED=0`` to force
the pure-PyTorch path. A build that takes more than ``NOTICE_AFTER_S`` seconds (a compile, not
loading a cached build) logs a warning saying so and shows a ``tqdm.auto`` progress line with
the elapsed time, so a notebook never compiles for minutes in silence.

The build cache: one folder per build key under ``$TORCH_EXTENSIONS_DIR`` (else
``~/.cache/mesimp_lib/native``), named ``mesimp_fused_<key>`` where the key hashes the sources, the
compiler flags, the torch and Python versions, the CPU's feature flags (the code is built with
``-march=native``) and this checkout's path, so a checkout never loads kernels compiled from other
sources or for another CPU. After a build the shared object's sha256 is written next to it; a
shared object without that record, or whose bytes differ from it (a foreign, stale or half-written
file), is deleted and rebuilt. Builders take a lock file holding their pid: a lock left by a dead
process (a killed first build) is removed; one held by a live process longer than
``MESIMP_BUILD_WAIT`` seconds (default 900) makes this process fall back to pure PyTorch, with a
log message, instead of waiting forever.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("mesimp_lib.fused")
_lock = threading.Lock()
_state: dict = {}
NOTICE_AFTER_S = 2.0  # loading a cached build takes well under this; a compile takes minutes
COMPILE_NOTICE = ("compiling meProp's native C++ kernels: first use with this torch on this machine, "
                  "about 1-6 minutes on 2 cores, once (later runs load the build in a second); "
                  "MESIMP_FUSED=0 skips them")


def _load_with_notice(load, **kwargs):
    """``load(**kwargs)``; past NOTICE_AFTER_S, a warning and an elapsed-time progress line."""
    done = threading.Event()

    def notice():
        if done.wait(NOTICE_AFTER_S):
            return
        from tqdm.auto import tqdm

        log.warning(COMPILE_NOTICE)
        with tqdm(desc="compiling native kernels", total=None, bar_format="{desc}: {elapsed} elapsed") as bar:
            while not done.wait(2.0):
                bar.refresh()

    watcher = threading.Thread(target=notice, daemon=True)
    watcher.start()
    try:
        return load(**kwargs)
    finally:
        done.set()
        watcher.join()


__all__ = ["kernels", "status"]


def kernels():
    """The compiled kernels module (built once per machine and torch version), or None."""
    with _lock:
        if "module" in _state:
            return _state["module"]
        module, why = None, ""
        if os.environ.get("MESIMP_FUSED", "1") == "0":
            why = "disabled by MESIMP_FUSED=0"
        else:
            try:
                from torch.utils.cpp_extension import load

                here = Path(__file__).parent
                srcs = [str(here / "meprop_fused.cpp"), str(here / "meprop_native.cpp")]
                # no -ffast-math: the Adam step must round like torch.optim.Adam; -fno-math-errno lets the
                # compiler vectorise sqrt
                flags = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno"]
                module = _load_cached(load, srcs, flags)
            except Exception as e:  # noqa: BLE001 - any build failure means: use the fallback
                why = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        _state["module"] = module
        _state["status"] = "fused C++ kernels" if module is not None else f"pure PyTorch ({why})"
        # a build that failed is worth a warning: the default kernel="auto" then takes the slower PyTorch path
        (log.info if module is not None or why.startswith("disabled") else log.warning)(
            "meProp backward: %s", _state["status"])
        return module


def status() -> str:
    """Which backward path is in use: 'fused C++ kernels' or 'pure PyTorch (reason)'."""
    kernels()
    return _state["status"]


# --------------------------------------------------------------------------- build cache

LOCK = "mesimp_build.lock"  # our lock (pid inside); torch's own lock file in the same folder is "lock"


class BuildLockTimeout(RuntimeError):
    """Another live process held the build lock longer than MESIMP_BUILD_WAIT seconds."""


def _cpu_flags() -> str:
    """The CPU's feature flags (Linux /proc/cpuinfo), else the processor's name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def build_key(srcs: list[str], flags: list[str]) -> str:
    """A hash of everything the compiled code depends on: sources, flags, torch and Python versions, CPU
    feature flags and this checkout's path."""
    import torch

    h = hashlib.sha256()
    for src in srcs:
        h.update(Path(src).read_bytes())
    parts = [*flags, torch.__version__, str(torch.version.git_version), sys.version, _cpu_flags(),
             str(Path(__file__).resolve().parent)]
    h.update("\0".join(parts).encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mesimp_lib" / "native"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_built(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds a shared object this code built (its sha256 recorded after the build). A shared
    object without the record or with other bytes is deleted with the build's outputs, so it is rebuilt."""
    so, record = folder / f"{name}.so", folder / f"{name}.so.sha256"
    if not so.exists():
        return False
    if record.exists() and record.read_text().strip() == _sha256(so):
        return True
    log.warning("native kernels: %s has no matching build record (foreign or stale); rebuilding", so)
    for f in folder.iterdir():
        if f.name != LOCK:
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    return False


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():  # a lock with our own pid was left by an earlier process (pid reused): this process
        return False  # builds under the module's thread lock, never twice at once
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(folder: Path, wait_s: float) -> Path:
    """Take the build lock of ``folder`` (a file holding our pid). A lock whose process is dead is stale: it is
    removed, with torch's own lock file. Raises BuildLockTimeout after ``wait_s`` seconds of a live holder."""
    lock = folder / LOCK
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and not _pid_alive(pid) or not pid and time.monotonic() > deadline:
                log.warning("native kernels: removing a stale build lock in %s (pid %s is not running)", folder,
                            pid or "unknown")
                lock.unlink(missing_ok=True)
                (folder / "lock").unlink(missing_ok=True)  # torch's FileBaton, left by the same killed build
                continue
            if time.monotonic() > deadline:
                raise BuildLockTimeout(f"the build lock {lock} is held by the running process {pid} for over "
                                       f"{wait_s:.0f} s (MESIMP_BUILD_WAIT)")
            time.sleep(0.2)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        # we hold our lock, so a torch lock file here was left by a killed build (every builder takes ours first)
        (folder / "lock").unlink(missing_ok=True)
        return lock


def _load_cached(load, srcs: list[str], flags: list[str]):
    """Build (or reuse) the kernels in this build key's own folder, under the pid lock, and import them."""
    name = f"mesimp_fused_{build_key(srcs, flags)}"
    folder = cache_root() / name
    folder.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(folder, float(os.environ.get("MESIMP_BUILD_WAIT", "900")))
    try:
        cached = check_built(folder, name)
        module = _load_with_notice(load, name=name, sources=srcs, extra_cflags=flags, build_directory=str(folder),
                                   verbose=False)
        if not cached:  # just built: record its bytes (atomically: never a half-written record)
            from ..files import write_atomic

            digest = _sha256(folder / f"{name}.so")
            write_atomic(folder / f"{name}.so.sha256", lambda f: f.write(digest))
        return module
    finally:
        lock.unlink(missing_ok=True)
