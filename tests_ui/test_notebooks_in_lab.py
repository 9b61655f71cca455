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
    KERNEL_JS,
    NOTEBOOK_TIMEOUT,
    PROGRESS_JS,
    assert_not_clipped,
    clear_outputs,
    move_slider_and_check,
    notebooks_with_widgets,
    open_in_lab,
    report_js_errors,
    strip_ansi,
    wait_plots,
    widget_cells,
)

NOTEBOOKS = notebooks_with_widgets()

MARK_JS = """
(indices) => {
  const nb = window.__uiNotebook;
  for (const i of indices) nb.content.widgets[i].node.setAttribute('data-ui-test-cell', String(i));
}
"""


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebook calls a widget factory")
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_widgets_in_lab(nb_path, page, lab, artifacts):
    cells = widget_cells(nb_path)
    rel = f"notebooks/{nb_path.name}"
    t0 = time.monotonic()
    page.set_viewport_size({"width": 1280, "height": 1000})
    open_in_lab(page, lab, rel)

    clear_outputs(page)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

    # wait for every non-empty code cell to have run, stopping at the first error
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT
    while True:
        progress = page.evaluate(PROGRESS_JS)
        errors = [(i, e) for i, _src, _n, errs in progress for e in errs]
        assert not errors, f"{rel}: cell {errors[0][0]} failed:\n{strip_ansi(errors[0][1])[-3000:]}"
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
