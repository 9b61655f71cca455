"""The standalone app (`make app`: python -m mesimp_lib.viz.appserver, Voila on
app/mesimp_lab_app.ipynb) in a real browser, as a user's browser runs it: no patience injected.

Several fresh page loads; on each, every widget renders, every slider and the play button
change a plot. Also: closing a tab frees its kernel, an idle kernel is culled, the server
refuses more than --max-kernels pages with a clear message, and the load time and kernel
memory are measured (printed, and written to tests_ui/artifacts/app-measurements.json)."""

from __future__ import annotations

import json
import os
import time

import pytest
from uihelpers import (
    ARTIFACTS,
    FACTORIES,
    ROOT,
    assert_not_clipped,
    move_every_control,
    report_js_errors,
    wait_plots,
    widget_cells,
)

APP = ROOT / "app" / "mesimp_lab_app.ipynb"
CELLS = widget_cells(APP)
WIDGET_OUTPUT = ".jp-OutputArea-output:has(.widget-slider)"  # Voila sets no data-mime-type
LOADS = int(os.environ.get("MESIMP_UI_VOILA_LOADS", "3"))
MEASURED: dict = {"loads_s": [], "kernel_rss_mb": []}


def test_app_notebook_has_the_three_widgets():
    assert sorted(f for _, f in CELLS) == sorted(FACTORIES)


def load_app(browser, server, width: int = 1280):
    """A fresh browser context (no injected scripts) on the app; waits for every plot."""
    context = browser.new_context(viewport={"width": width, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors
    t0 = time.monotonic()
    try:
        page.goto(f"{server.url}/?token={server.token}", timeout=300_000)  # Voila runs the notebook first
        page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length >= n",
                               arg=[WIDGET_OUTPUT, len(CELLS)], timeout=180_000)
        wait_plots(page, page.locator("body"), sum(FACTORIES[f][1] for _, f in CELLS), timeout_s=120)
    except Exception as e:
        page.screenshot(path=str(ARTIFACTS / "voila-load-failed.png"))
        raise AssertionError(f"the app did not render: {e}\npage errors: {errors}\npage text: "
                             f"{page.locator('body').inner_text()[-2000:]}\nserver log:\n{server.log_tail(3000)}") from e
    return context, page, time.monotonic() - t0


def kernel_rss_mb(server) -> list[float]:
    out = []
    for pid, _ in server.descendants():
        try:
            status = open(f"/proc/{pid}/status").read()
            cmdline = open(f"/proc/{pid}/cmdline").read()
        except OSError:
            continue
        if "ipykernel" in cmdline:
            out.append(int(status.split("VmRSS:")[1].split()[0]) / 1024)
    return out


def wait_kernels(server, n: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while len(kernel_rss_mb(server)) != n and time.monotonic() < deadline:
        time.sleep(1)
    return len(kernel_rss_mb(server))


@pytest.mark.parametrize("load", range(LOADS), ids=[f"load{i + 1}" for i in range(LOADS)])
def test_voila_every_control_follows_on_a_fresh_load(browser, voila, artifacts, load):
    width = 1920 if load == 1 else 1280  # both window widths the course is checked at
    context, page, load_s = load_app(browser, voila, width=width)
    MEASURED["loads_s"].append(round(load_s, 1))
    MEASURED["kernel_rss_mb"] += [round(m) for m in kernel_rss_mb(voila)]
    try:
        text = page.locator("body").inner_text()
        assert "meSimp Lab" in text
        assert "setup_notebook(" not in text and "k_explorer()" not in text, "code cells are shown"
        assert "Traceback" not in text and "Error displaying widget" not in text, text[-3000:]
        outs = page.locator(WIDGET_OUTPUT)
        assert outs.count() == len(CELLS)
        for n, (_i, factory) in enumerate(CELLS):
            assert_not_clipped(outs.nth(n), f"{factory} at {width} px")
            moved = move_every_control(page, outs.nth(n), factory, timeout_s=60)
            print(f"voila load {load + 1} ({width} px) {factory}: {moved}")
            if load <= 1:
                page.wait_for_timeout(500)
                outs.nth(n).screenshot(path=str(artifacts / f"voila-{width}-{n}-{factory}.png"))
        if load <= 1:
            page.set_viewport_size({"width": width, "height": 3400})
            page.wait_for_timeout(1000)
            page.screenshot(path=str(artifacts / f"voila-app-full-{width}.png"))
        assert not [e for e in page.js_errors if "anywidget" in e], page.js_errors
        report_js_errors(page)
        page.close(run_before_unload=True)  # what closing the tab does: Voila's beacon stops the kernel
        assert wait_kernels(voila, 0, 30) == 0, "the kernel of a closed page is still running after 30 s"
    finally:
        context.close()
    print(f"voila load {load + 1}: rendered in {load_s:.0f} s")


def test_idle_kernel_is_culled_and_the_app_refuses_more_than_max_kernels(browser, voila_strict, artifacts):
    """A server with --max-kernels 1 and a 20 s idle limit: a second page gets the 'app is full'
    message; the first page's kernel, left idle (tab open), is culled; then a page loads again."""
    ctx1, page1, _ = load_app(browser, voila_strict)
    ctx2 = browser.new_context()
    try:
        page2 = ctx2.new_page()
        page2.goto(f"{voila_strict.url}/?token={voila_strict.token}", timeout=120_000)
        assert "the app is full" in page2.locator("body").inner_text(), page2.locator("body").inner_text()[:2000]
        t0 = time.monotonic()
        assert wait_kernels(voila_strict, 0, 120) == 0, "an idle kernel was not culled within 120 s"
        print(f"idle kernel culled {time.monotonic() - t0:.0f} s after the check began (limit 20 s)")
    finally:
        ctx2.close()
        ctx1.close()
    ctx3, _page3, load_s = load_app(browser, voila_strict)
    ctx3.close()
    MEASURED["loads_s"].append(round(load_s, 1))


def test_zz_write_measurements(artifacts):
    """Load times and kernel sizes of this run, for docs/README.md's figures."""
    if not MEASURED["loads_s"]:
        pytest.skip("no app load ran")
    (artifacts / "app-measurements.json").write_text(json.dumps(MEASURED, indent=1))
    print(f"app: loads {MEASURED['loads_s']} s, kernel RSS {MEASURED['kernel_rss_mb']} MB")
