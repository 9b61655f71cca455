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

# JupyterLab (started with expose_app_in_browser): open a notebook, keep it as window.__uiNotebook
OPEN_JS = """
async (path) => {
  const app = window.jupyterapp;
  await app.started;
  await app.restored;
  const nb = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  await nb.context.ready;
  await nb.sessionContext.ready;
  app.shell.activateById(nb.id);
  window.__uiNotebook = nb;
  return nb.id;
}
"""

KERNEL_JS = """
() => {
  const s = window.__uiNotebook.sessionContext;
  const k = s.session && s.session.kernel;
  return k ? [k.connectionStatus, k.status] : ['none', 'none'];
}
"""

# per code cell: [index, has source, execution count, error-or-traceback texts]
PROGRESS_JS = """
() => {
  const nb = window.__uiNotebook;
  const out = [];
  nb.content.widgets.forEach((cell, i) => {
    if (cell.model.type !== 'code') return;
    const errors = [];
    for (const o of cell.model.outputs.toJSON()) {
      if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue + '\\n' + (o.traceback || []).join('\\n'));
      if (o.output_type === 'stream' && o.name === 'stderr' && /Traceback/.test(o.text)) errors.push(o.text);
    }
    out.push([i, cell.model.sharedModel.getSource().trim().length > 0, cell.model.executionCount, errors]);
  });
  return out;
}
"""


def open_in_lab(page, lab, rel: str) -> str:
    """Load Lab (a fresh workspace), open notebook ``rel`` with the file browser open, and wait
    until its kernel is connected and idle. The notebook panel is window.__uiNotebook; returns its
    DOM id."""
    page.goto(f"{lab.url}/lab?reset&token={lab.token}")
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=120_000)
    panel_id = page.evaluate(OPEN_JS, rel)
    page.evaluate("() => window.jupyterapp.commands.execute('filebrowser:activate')")  # the sidebar open
    page.wait_for_function(f"({KERNEL_JS})()[0] === 'connected' && ({KERNEL_JS})()[1] === 'idle'", timeout=120_000)
    return panel_id


def clear_outputs(page) -> None:
    """Lab's "Clear Outputs of All Cells" on window.__uiNotebook, waiting until every code cell is empty."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    page.wait_for_function("() => window.__uiNotebook.content.widgets.every("
                           "c => c.model.type !== 'code' || c.model.outputs.length === 0)", timeout=30_000)


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


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


def slider_labels(container) -> list[str]:
    """The descriptions of every ipywidgets slider in ``container``, in page order."""
    return [t.strip() for t in container.locator(".widget-slider .widget-label").all_inner_texts() if t.strip()]


def wait_plot_change(page, container, before: list[str], timeout_s: float) -> list[int]:
    """Indices of the plots whose data or shapes differ from ``before``, waiting up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    after = before
    while time.monotonic() < deadline:
        after = plot_data(container)
        if len(after) == len(before) and after != before:
            break
        page.wait_for_timeout(250)
    return [i for i, (a, b) in enumerate(zip(before, after)) if a != b]


def move_slider(page, container, label: str, what: str, timeout_s: float = 60) -> dict:
    """Press ArrowRight on slider ``label``'s handle (ArrowLeft if it is at the end) and wait
    until a plot's data (or shapes) changed. Returns what changed, for the report."""
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
    assert after_value != before_value, f"{what}: the {label!r} slider did not move with the keyboard"
    changed = wait_plot_change(page, container, before, timeout_s)
    assert changed, (f"{what}: no plot changed within {timeout_s} s after moving {label!r} "
                     f"{before_value} -> {after_value}")
    return {"slider": label, "from": before_value, "to": after_value, "plots_changed": changed}


def move_slider_and_check(page, container, factory: str, timeout_s: float = 90) -> dict:
    """Move the factory's main slider (see ``move_slider``) once its plots are drawn."""
    label, n = FACTORIES[factory]
    wait_plots(page, container, n)
    return move_slider(page, container, label, factory, timeout_s)


def move_every_control(page, container, factory: str, timeout_s: float = 60) -> list[dict]:
    """Move every slider of the widget and press its play button (if any): each must change a
    plot within ``timeout_s`` (no patience injected: what a user's browser does)."""
    wait_plots(page, container, FACTORIES[factory][1])
    labels = slider_labels(container)
    assert FACTORIES[factory][0] in labels, f"{factory}: no {FACTORIES[factory][0]!r} slider in {labels}"
    moved = [move_slider(page, container, label, factory, timeout_s) for label in labels]
    play = container.locator(".widget-play button").first
    if play.count():
        before = plot_data(container)
        play.click()
        changed = wait_plot_change(page, container, before, timeout_s)
        assert changed, f"{factory}: pressing play changed no plot within {timeout_s} s"
        moved.append({"control": "play", "plots_changed": changed})
    return moved


def report_js_errors(page) -> None:
    """Uncaught errors of the page, as a warning: some are timing noise on a loaded machine
    (anywidget's 2 s "Failed to initialize model" while the models still work); what matters
    is asserted on the plots themselves."""
    import warnings

    for e in getattr(page, "js_errors", []):
        warnings.warn(f"page error: {e}", stacklevel=2)


CLIP_JS = """
el => Array.from(el.querySelectorAll('.js-plotly-plot')).map(gd => {
  const svg = gd.querySelector('.main-svg').getBoundingClientRect();
  const box = gd.parentElement.getBoundingClientRect();
  return {svg_w: Math.round(svg.width), box_w: Math.round(box.width), svg_right: Math.round(svg.right),
          box_right: Math.round(box.right), page_w: document.documentElement.clientWidth,
          overflow: el.scrollWidth - el.clientWidth};
})
"""


def assert_not_clipped(container, what: str) -> list[dict]:
    """Every plot of ``container`` fits its box and the window (no fixed width wider than the
    container, no horizontal scrolling inside the widget)."""
    sizes = container.evaluate(CLIP_JS)
    assert sizes, f"{what}: no plots"
    for s in sizes:
        assert s["svg_w"] <= s["box_w"] + 2 and s["svg_right"] <= s["page_w"] + 2, f"{what}: a plot is clipped: {s}"
        assert s["overflow"] <= 2, f"{what}: the widget scrolls sideways: {s}"
    return sizes
