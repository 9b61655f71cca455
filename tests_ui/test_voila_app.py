"""The standalone app (`make app`: Voila on app/mesimp_lab_app.ipynb) in a real browser:
it renders every widget with the code hidden, and each widget's main slider changes a plot."""

from __future__ import annotations

import time

import pytest
from uihelpers import (
    FACTORIES,
    ROOT,
    move_slider_and_check,
    patient_anywidget,
    report_js_errors,
    wait_plots,
    widget_cells,
)

APP = ROOT / "app" / "mesimp_lab_app.ipynb"
CELLS = widget_cells(APP)
WIDGET_OUTPUT = ".jp-OutputArea-output:has(.jupyter-widgets)"  # Voila sets no data-mime-type


def test_app_notebook_has_the_three_widgets():
    assert sorted(f for _, f in CELLS) == sorted(FACTORIES)


@pytest.fixture(scope="module")
def app_page(browser, voila, artifacts):
    """The app loaded once in Voila, every widget rendered; a screenshot of the whole page."""
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    patient_anywidget(page)  # see uihelpers.ANYWIDGET_PATIENCE_JS
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors
    t0 = time.monotonic()
    page.goto(f"{voila.url}/?token={voila.token}", timeout=300_000)  # Voila runs the notebook first
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length >= n",
                           arg=[WIDGET_OUTPUT, len(CELLS)], timeout=300_000)
    wait_plots(page, page.locator("body"), sum(FACTORIES[f][1] for _, f in CELLS), timeout_s=180)
    print(f"voila: app rendered in {time.monotonic() - t0:.0f} s")
    # the page scrolls inside Voila's own container, so a tall window shows the whole app
    page.set_viewport_size({"width": 1600, "height": 3400})
    page.wait_for_timeout(1000)
    page.screenshot(path=str(artifacts / "voila-app-full.png"))
    page.set_viewport_size({"width": 1600, "height": 1100})
    yield page
    context.close()


def test_voila_app_renders_without_code_or_errors(app_page):
    text = app_page.locator("body").inner_text()
    assert "meSimp Lab" in text
    assert "setup_notebook(" not in text and "k_explorer()" not in text, "code cells are shown"
    assert "Traceback" not in text and "Error displaying widget" not in text, text[-3000:]
    assert app_page.locator(WIDGET_OUTPUT).count() == len(CELLS)


@pytest.mark.parametrize("n, factory", [(n, f) for n, (_i, f) in enumerate(CELLS)], ids=[f for _, f in CELLS])
def test_voila_slider_changes_a_plot(app_page, artifacts, n, factory):
    out = app_page.locator(WIDGET_OUTPUT).nth(n)
    moved = move_slider_and_check(app_page, out, factory, timeout_s=60)
    app_page.wait_for_timeout(500)  # let plotly finish drawing before the picture
    out.scroll_into_view_if_needed()
    out.screenshot(path=str(artifacts / f"voila-{n}-{factory}.png"))
    print(f"voila {factory}: {moved}")
    report_js_errors(app_page)
