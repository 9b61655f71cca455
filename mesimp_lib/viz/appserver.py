"""``make app``: the widgets as a standalone web app (Voila on app/mesimp_lab_app.ipynb, code
hidden), with the settings a classroom needs. One place for them, used by ``make app`` and by
the browser tests:

    python -m mesimp_lib.viz.appserver [--port 8866] [--max-kernels 6] [--idle-minutes 10]
                                       [--token TOKEN | --no-token]

- **token**: a random token by default (Voila prints the URL that carries it); ``--no-token``
  is the explicit local-only choice: the server listens on 127.0.0.1 only (always), and anyone
  with a shell on this machine can then open the app.
- **kernels are freed**: every page load starts a kernel (a Python process with torch, MNIST
  and the stored runs, about 0.5-0.7 GB); closing the tab shuts it down at once (Voila's page
  sends a shutdown beacon on ``beforeunload``), and a kernel idle for ``--idle-minutes`` is
  culled, also when its tab is still open or died without the beacon (the page then needs
  a reload).
- **bounded memory**: at most ``--max-kernels`` kernels at a time; one more page load gets a
  clear "the app is full" error instead of swapping the machine. Memory is then bounded by
  about max-kernels x the kernel size (measured by the browser test, see docs/README.md).
- **progressive rendering**: by default Voila runs the notebook on the server while the page
  loads, and the page's widget manager asks the kernel for its widgets when it starts. Seen here
  on a busy 2-core machine: about one page load in five asked too early, missed the widgets'
  creation messages, and showed "Error displaying widget: model not found" for every widget (the
  page looked loaded; nothing followed a slider). With progressive rendering the page connects
  first and then has the cells run, so every widget is created after its manager listens
  (8 of 8 loads with every control moved, against 1 failure in 5 without).

Needs the ``ui`` extra (voila).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..validate import check_float, check_int

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app" / "mesimp_lab_app.ipynb"
MANAGER = "mesimp_lib.viz.appserver.BoundedKernelManager"


def _bounded_manager_class():
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from tornado.web import HTTPError
    from traitlets import Int

    class BoundedKernelManager(AsyncMappingKernelManager):
        """A kernel manager that refuses to start more than ``max_kernels`` kernels."""

        max_kernels = Int(6, config=True, help="most kernels alive at once (0: no limit)")

        async def start_kernel(self, *args, **kwargs):
            if kwargs.get("kernel_id") is None and 0 < self.max_kernels <= len(self.list_kernel_ids()):
                why = (f"the app is full: {len(self.list_kernel_ids())} pages are open, the most this server "
                       f"allows is {self.max_kernels} (--max-kernels); close a tab or wait for an idle one to be "
                       "freed, then reload")
                raise HTTPError(503, why, reason=why)  # the reason is what the error page shows
            return await super().start_kernel(*args, **kwargs)

    return BoundedKernelManager


def __getattr__(name):  # jupyter_server is imported only when Voila asks for the class
    if name == "BoundedKernelManager":
        return _bounded_manager_class()
    raise AttributeError(name)


def set_xsrf_cookie(req, notebook, cwd) -> None:
    """Voila prelaunch hook (app/voila.py): reading ``xsrf_token`` makes tornado set the
    ``_xsrf`` cookie that the page's shutdown-on-close POST must carry."""
    req.xsrf_token  # noqa: B018 - the property sets the cookie


def voila_command(port: int = 8866, token: str | None = "auto", max_kernels: int = 6,
                  idle_minutes: float = 10, cull_interval_s: int = 30, notebook: Path = APP) -> list[str]:
    """The Voila command line with the classroom settings (see the module docstring).

    ``token``: ``"auto"`` (a random one, printed), a string of the caller's, or ``None``
    (no token: the explicit local-only choice)."""
    max_kernels = check_int("max_kernels", max_kernels, 0)  # 0: no limit
    idle_minutes = check_float("idle_minutes", idle_minutes, 0, lo_open=True)  # idle kernels are always culled
    cmd = [sys.executable, "-m", "voila", str(notebook), "--no-browser", "--Voila.ip=127.0.0.1",
           f"--port={port}", "--Voila.port_retries=0", f"--Voila.config_file_paths={ROOT / 'app'}",
           f"--VoilaConfiguration.multi_kernel_manager_class={MANAGER}",
           f"--BoundedKernelManager.max_kernels={max_kernels}",
           f"--MappingKernelManager.cull_idle_timeout={round(idle_minutes * 60)}",
           f"--MappingKernelManager.cull_interval={cull_interval_s}",
           "--MappingKernelManager.cull_connected=True",
           # the page connects first and then asks for the cells to run, so its widget manager is
           # ready before the kernel creates a widget (see the module docstring)
           "--VoilaConfiguration.progressive_rendering=True"]
    if token == "auto":
        cmd.append("--token")
    else:
        cmd.append(f"--Voila.token={token or ''}")
    return cmd


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mesimp_lib.viz.appserver", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8866)
    ap.add_argument("--max-kernels", type=int, default=6, help="most pages open at once (default 6; 0: no limit)")
    ap.add_argument("--idle-minutes", type=float, default=10, help="cull a kernel idle this long (default 10)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--token", default="auto", help="the access token (default: a random one, printed)")
    group.add_argument("--no-token", action="store_true",
                       help="no token: the explicit local-only choice (127.0.0.1, anyone on this machine)")
    args = ap.parse_args(argv)
    try:
        cmd = voila_command(args.port, None if args.no_token else args.token, args.max_kernels, args.idle_minutes)
    except ValueError as e:
        ap.error(str(e))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype")
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()

