"""Fused native meProp backward kernels, compiled on first use.

``kernels()`` returns the compiled extension, or None when it cannot be built here (no C++
compiler or ninja, a non-CPU build...); the pure-PyTorch path in ``meprop.py`` is then used. One
log line (logger ``mesimp_lib.fused``) says which path is active. Set ``MESIMP_FUSED=0`` to force
the pure-PyTorch path. A build that takes more than ``NOTICE_AFTER_S`` seconds (a compile, not
loading a cached build) logs a warning saying so and shows a ``tqdm.auto`` progress line with
the elapsed time, so a notebook never compiles for minutes in silence.
"""

from __future__ import annotations

import logging
import os
import threading
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
                module = _load_with_notice(load, name="mesimp_meprop_fused", sources=srcs, extra_cflags=flags,
                                           verbose=False)
            except Exception as e:  # noqa: BLE001 - any build failure means: use the fallback
                why = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        _state["module"] = module
        _state["status"] = "fused C++ kernels" if module is not None else f"pure PyTorch ({why})"
        log.info("meProp backward: %s", _state["status"])
        return module


def status() -> str:
    """Which backward path is in use: 'fused C++ kernels' or 'pure PyTorch (reason)'."""
    kernels()
    return _state["status"]
