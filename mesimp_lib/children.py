"""Child processes of an experiment suite die with it.

Every run is its own ``python -m mesimp_lib train`` process, started in a process group of its own
(so a terminal's Ctrl-C reaches the suite, which then kills its children, not only the children).
The suite kills its children's groups when it stops for any reason it can see (an exception,
Ctrl-C, SIGTERM); for the one it cannot see, SIGKILL of the suite, each child asks Linux to kill it
when its parent dies (``PR_SET_PDEATHSIG``), or, elsewhere, watches its parent and exits when it is
gone. Results are written atomically, so a re-run of the suite resumes with the runs that finished.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time

__all__ = ["ChildGroup", "PARENT_ENV", "die_with_parent"]

PARENT_ENV = "MESIMP_SUITE_PARENT"  # set for a child: the pid of the suite that started it
_PR_SET_PDEATHSIG = 1


def _orphaned(parent: int) -> None:
    logging.getLogger(__name__).error("the experiment suite (pid %d, $%s) that started this run is gone; stopping "
                                      "(re-run the suite to resume)", parent, PARENT_ENV)
    os._exit(1)


def die_with_parent() -> None:
    """In a suite's child (``PARENT_ENV`` set): exit when the suite dies, even by SIGKILL."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not parent.isdigit():
        return
    parent = int(parent)
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the suite died before the signal was armed
        _orphaned(parent)
    if not armed:
        def watch():
            while os.getppid() == parent:
                time.sleep(1.0)
            _orphaned(parent)

        threading.Thread(target=watch, daemon=True, name="parent-watch").start()


class ChildGroup:
    """Runs children (``run(cmd)``, from any thread) and, on leaving a ``with`` block by an exception
    (Ctrl-C included) or on SIGTERM, kills every child still running, with its process group."""

    def __init__(self):
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._old_term = None
        self._stopped = False

    def run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        """Run ``cmd`` to its end (exit status -9 and nothing started once the group was stopped)."""
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        with self._lock:
            if self._stopped:  # runs still queued when the suite stopped are not started
                return subprocess.CompletedProcess(cmd, -signal.SIGKILL, "", "not started: the suite stopped")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                    start_new_session=True)
            self._procs.add(proc)
        try:
            out, err = proc.communicate()
        finally:
            with self._lock:
                self._procs.discard(proc)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def kill_all(self) -> None:
        """Kill every running child with its process group; start no more."""
        with self._lock:
            self._stopped = True
            procs = list(self._procs)
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _on_term(self, signum, frame):
        self.kill_all()
        raise SystemExit(128 + signum)

    def __enter__(self) -> "ChildGroup":
        if threading.current_thread() is threading.main_thread():
            self._old_term = signal.signal(signal.SIGTERM, self._on_term)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.kill_all()
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
