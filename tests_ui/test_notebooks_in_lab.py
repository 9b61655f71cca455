"""Every notebook with a widget, run in JupyterLab in a real browser (Debian chromium).

For each notebook of notebooks/NN_*.ipynb whose code calls active_paths(), layer_shrinkage()
or k_explorer(): open it in Lab (a temporary copy), clear its outputs, run all cells, check
that no cell failed, move the widget's main slider and check that a plot's data changed. The
window is 1280 px wide with the file browser open (the narrowest case): no plot may be clipped.
Screenshots of each widget land in tests_ui/artifacts/."""

from __future__ import annotations

import time

import pytest
from uihelpers import (
    FACTORIES,
    NOTEBOOK_TIMEOUT,
    assert_not_clipped,
    move_slider_and_check,
    notebooks_with_widgets,
    report_js_errors,
    wait_plots,
    widget_cells,
)

NOTEBOOKS = notebooks_with_widgets()

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

MARK_JS = """
(indices) => {
  const nb = window.__uiNotebook;
  for (const i of indices) nb.content.widgets[i].node.setAttribute('data-ui-test-cell', String(i));
}
"""


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebook calls a widget factory")
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_widgets_in_lab(nb_path, page, lab, artifacts):
    cells = widget_cells(nb_path)
    rel = f"notebooks/{nb_path.name}"
    t0 = time.monotonic()
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.goto(f"{lab.url}/lab?reset&token={lab.token}")
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=120_000)
    page.evaluate(OPEN_JS, rel)
    page.evaluate("() => window.jupyterapp.commands.execute('filebrowser:activate')")  # the sidebar open
    page.wait_for_function(f"({KERNEL_JS})()[0] === 'connected' && ({KERNEL_JS})()[1] === 'idle'", timeout=120_000)

    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    page.wait_for_function("() => window.__uiNotebook.content.widgets.every("
                           "c => c.model.type !== 'code' || c.model.outputs.length === 0)", timeout=30_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

    # wait for every non-empty code cell to have run, stopping at the first error
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT
    while True:
        progress = page.evaluate(PROGRESS_JS)
        errors = [(i, e) for i, _src, _n, errs in progress for e in errs]
        assert not errors, f"{rel}: cell {errors[0][0]} failed:\n{_strip_ansi(errors[0][1])[-3000:]}"
        pending = [i for i, src, n, _ in progress if src and n is None]
        status = page.evaluate(KERNEL_JS)
        if not pending and status[1] == "idle":
            break
        assert status[0] == "connected", f"{rel}: kernel {status} while cells {pending} had not run"
        assert time.monotonic() < deadline, f"{rel}: cells {pending} not run after {NOTEBOOK_TIMEOUT} s"
        page.wait_for_timeout(1000)
    run_s = time.monotonic() - t0

    stderr_tb = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]',
                             has_text="Traceback")
    assert stderr_tb.count() == 0, f"{rel}: traceback in the page:\n{stderr_tb.first.inner_text()[-3000:]}"

    page.evaluate(MARK_JS, [i for i, _ in cells])
    for i, factory in cells:
        out = page.locator(f'[data-ui-test-cell="{i}"] .jp-OutputArea-output').filter(
            has=page.locator(".jupyter-widgets")).first
        out.scroll_into_view_if_needed()
        wait_plots(page, out, FACTORIES[factory][1])
        assert "Error displaying widget" not in out.inner_text()
        assert page.locator("#filebrowser").is_visible(), "the file browser sidebar is not open"
        assert_not_clipped(out, f"{rel} {factory} at 1280 px with the sidebar")
        moved = move_slider_and_check(page, out, factory)
        page.wait_for_timeout(500)  # let plotly finish its transition before the picture
        out.scroll_into_view_if_needed()
        shot = artifacts / f"lab-{nb_path.stem}-cell{i}-{factory}.png"
        out.screenshot(path=str(shot))
        print(f"{rel} cell {i} {factory}: ran in {run_s:.0f} s, {moved}, screenshot {shot.name}")
    report_js_errors(page)
