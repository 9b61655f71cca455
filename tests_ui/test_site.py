"""`make site`: the course as static HTML. Every page opens in chromium from disk (no server, no
network), its stored plotly figures draw, and the sliders of the apps' stored-run figures move
the plot (plotly frames, no kernel)."""

from __future__ import annotations

import pytest
from uihelpers import ROOT

# notebooks whose widget cells store a stepped figure (the apps' static_figure)
WITH_APP_FIGURES = ["05_mesimp", "06_meact", "07_lstm_pos_tagging"]

SLIDER_PLOTS_JS = """
() => Array.from(document.querySelectorAll('.js-plotly-plot'))
        .map((gd, i) => [i, (gd.layout.sliders || []).length, (gd.layout.sliders || [{}])[0].steps?.length || 0])
        .filter(([i, n, steps]) => n > 0)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from mesimp_lib.viz.site import build_site

    out = tmp_path_factory.mktemp("site")
    pages = build_site(out)
    assert len(pages) == len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    return out


def test_site_index_lists_every_notebook(site, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto((site / "index.html").as_uri())
    links = page.locator("a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert sorted(links) == sorted(p.name for p in site.glob("[0-9][0-9]_*.html"))
    context.close()


@pytest.mark.parametrize("stem", WITH_APP_FIGURES)
def test_site_page_draws_its_figures_and_the_sliders_move(site, browser, artifacts, stem):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((site / f"{stem}.html").as_uri())
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length > 0", timeout=60_000)
    assert not errors, errors
    sliders = page.evaluate(SLIDER_PLOTS_JS)
    assert sliders, f"{stem}: no figure with a slider (the apps' stored-run figures)"
    for index, _n, steps in sliders:
        gd = page.locator(".js-plotly-plot").nth(index)
        gd.scroll_into_view_if_needed()
        before = gd.evaluate("gd => JSON.stringify([gd.data.map(t => t.y), gd.layout.title])")
        rail = gd.locator(".slider-rail-touch-rect").first
        box = rail.bounding_box()
        active = gd.evaluate("gd => gd.layout.sliders[0].active")
        target = 0 if active > 0 else steps - 1  # click the far end from the active step
        x = box["x"] + box["width"] * (0.02 if target == 0 else 0.98)
        page.mouse.click(x, box["y"] + box["height"] / 2)
        page.wait_for_function("([gd, b]) => JSON.stringify([gd.data.map(t => t.y), gd.layout.title]) !== b",
                               arg=[gd.element_handle(), before], timeout=10_000)
        assert gd.evaluate("gd => gd.layout.sliders[0].active") == target
    page.locator(".js-plotly-plot").nth(sliders[0][0]).screenshot(path=str(artifacts / f"site-{stem}.png"))
    context.close()
