"""Shared pieces of the browser tests: finding chromium, free ports, servers, widget cells, sliders."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# chromium as root in a container: no sandbox, no GPU, and no background connections (the
# machines' network is closed; without these flags chromium retries Google's hosts at every start)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]

# factory -> (label of its main slider, number of plotly figures it shows)
FACTORIES = {
    "k_explorer": ("k", 2),
    "active_paths": ("k", 2),
    "layer_shrinkage": ("prune rate", 1),
}
_CALL = re.compile(r"\b(" + "|".join(FACTORIES) + r")\s*\(")

# seconds one notebook may take to run all its cells (02 trains several small models)
NOTEBOOK_TIMEOUT = float(os.environ.get("MESIMP_UI_NOTEBOOK_TIMEOUT", "900"))


def find_chromium() -> str | None:
    """$MESIMP_CHROMIUM, else Debian's /usr/bin/chromium, else a chromium/chrome on PATH."""
    env = os.environ.get("MESIMP_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for cand in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(cand)
        if path:
            return path
    return None


def widget_cells(nb_path: Path) -> list[tuple[int, str]]:
    """(cell index, factory) for every code cell whose source calls one of the app factories."""
    nb = json.loads(Path(nb_path).read_text())
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        code = "\n".join(line.split("#", 1)[0] for line in src.splitlines())
        for m in _CALL.finditer(code):
            before = code[: m.start()]
            if before.rstrip().endswith("def") or re.search(r"import[^\n]*$", before):
                continue  # a definition or an import line, not a call
            found.append((i, m.group(1)))
            break
    return found


def notebooks_with_widgets() -> list[Path]:
    return [p for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) if widget_cells(p)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


class Server:
    """A server process in its own process group, stopped (group killed after a timeout) by ``stop``."""

    def __init__(self, cmd: list[str], url: str, log: Path, env: dict, cwd: Path, ready_path: str = "/"):
        self.url, self.log_path = url, log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)
        self._wait_ready(ready_path)

    def log_tail(self, n: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def _wait_ready(self, path: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=5):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log_tail()}")

    def descendants(self) -> list[tuple[int, str]]:
        """(pid, start time) of every process below the server (its kernels start sessions of
        their own, so the process group does not reach them)."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                continue
            out += [(k, _start_time(k)) for k in kids]
            todo += kids
        return out

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a clean shutdown that stops the kernels); after ``timeout`` s SIGKILL for the
        server's process group and for every process it had started."""
        kids = self.descendants()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid, started in kids:
            if started and _start_time(pid) == started:  # the same process, not a reused pid
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def jupyter_env(tmp: Path) -> dict:
    """The test's own Jupyter config/runtime/data dirs, 1 torch thread, compact plotly output."""
    env = dict(os.environ)
    for name in ("config", "runtime", "data"):
        d = tmp / f"jupyter_{name}"
        d.mkdir(parents=True, exist_ok=True)
        env[f"JUPYTER_{name.upper()}_DIR"] = str(d)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("PLOTLY_RENDERER", "plotly_mimetype")
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


# ----------------------------------------------------------------------------- in the page

# anywidget 0.11.0 gives each widget model 2 s (AbortSignal.timeout(2000)) to load its ESM; past
# that its `ready` promise is rejected ("[anywidget] Failed to initialize model.") and the model
# drops every later message from the kernel: the plotly FigureWidget still draws, but never
# follows a slider again. Loading plotly's 5 MB widget bundle for several figures at once (Voila
# creates all the page's models together) takes longer than 2 s on a busy 2-core machine, so
# the check failed at random (seen for layer_shrinkage and active_paths in Voila). The tests
# give it 120 s, to test the app rather than the machine's load; MESIMP_UI_ANYWIDGET_2S=1 keeps
# anywidget's own 2 s (to reproduce what a user on a slow machine can see).
ANYWIDGET_PATIENCE_JS = """
{ const timeout = AbortSignal.timeout.bind(AbortSignal);
  AbortSignal.timeout = (ms) => timeout(ms === 2000 ? 120000 : ms); }
"""


def patient_anywidget(page) -> None:
    if os.environ.get("MESIMP_UI_ANYWIDGET_2S") != "1":
        page.add_init_script(ANYWIDGET_PATIENCE_JS)


PLOT_DATA_JS = """
el => Array.from(el.querySelectorAll('.js-plotly-plot')).map(
    d => JSON.stringify([d.data || null, (d.layout && d.layout.shapes) || null]))
"""

PLOTS_READY_JS = """
([el, n]) => {
  const plots = Array.from(el.querySelectorAll('.js-plotly-plot'));
  return plots.length >= n && plots.every(d => Array.isArray(d.data) && d.data.length > 0
                                         && d.querySelector('.main-svg') !== null);
}
"""


def wait_plots(page, container, n: int, timeout_s: float = 120) -> None:
    """Wait until ``container`` (an element handle or locator) shows ``n`` drawn plotly plots."""
    handle = container.element_handle() if hasattr(container, "element_handle") else container
    page.wait_for_function(PLOTS_READY_JS, arg=[handle, n], timeout=timeout_s * 1000)


def plot_data(container) -> list[str]:
    return container.evaluate(PLOT_DATA_JS)


def slider(container, label: str):
    """The ipywidgets slider of ``container`` whose description is exactly ``label``."""
    return container.locator(".widget-slider").filter(
        has=container.page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    ).first


def move_slider_and_check(page, container, factory: str, timeout_s: float = 90) -> dict:
    """Press ArrowRight on the main slider's handle (ArrowLeft if it is at the end) and wait
    until a plot's data (or shapes) changed. Returns what changed, for the report."""
    label, n = FACTORIES[factory]
    wait_plots(page, container, n)
    s = slider(container, label)
    readout = s.locator(".widget-readout")
    before_value = readout.inner_text().strip()
    before = plot_data(container)
    handle = s.locator(".noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(300)
    if readout.inner_text().strip() == before_value:  # already the last option
        page.keyboard.press("ArrowLeft")
    after_value = readout.inner_text().strip()
    assert after_value != before_value, f"{factory}: the {label!r} slider did not move with the keyboard"
    deadline = time.monotonic() + timeout_s
    after = before
    while time.monotonic() < deadline:
        after = plot_data(container)
        if len(after) == len(before) and after != before:
            break
        page.wait_for_timeout(250)
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert changed, (f"{factory}: no plot changed within {timeout_s} s after moving {label!r} "
                     f"{before_value} -> {after_value}")
    return {"slider": label, "from": before_value, "to": after_value, "plots_changed": changed}


def report_js_errors(page) -> None:
    """Uncaught errors of the page, as a warning: some are timing noise on a loaded machine
    (anywidget's 2 s "Failed to initialize model" while the models still work); what matters
    is asserted on the plots themselves."""
    import warnings

    for e in getattr(page, "js_errors", []):
        warnings.warn(f"page error: {e}", stacklevel=2)
