"""Widgets driven without a browser: set a control's value, the figure data must change."""

import json

import pytest

pytest.importorskip("ipywidgets")

from mesimp_lib.viz import apps  # noqa: E402


def snapshot(fig):
    return json.dumps(fig.to_plotly_json()["data"], sort_keys=True, default=str)


@pytest.fixture(scope="module")
def paths_app():
    return apps.active_paths()


def test_active_paths_k_example_and_step_change_the_plot(paths_app):
    app = paths_app

    def net():
        return snapshot(app.figures["network"])

    before = net()
    app.controls["k"].value = 16
    after_k = net()
    assert after_k != before
    assert len(app.state()["layers"][0]["selected"]) <= 16
    app.controls["example"].value = 3
    assert net() != after_k
    digit_before = snapshot(app.figures["digit"])
    app.controls["example"].value = 4
    assert snapshot(app.figures["digit"]) != digit_before
    s = net()
    app.controls["step"].value = 0
    assert net() != s
    # hover text explains each unit
    assert any("chosen for" in str(t.text) for t in app.figures["network"].data)


def test_active_path_has_at_most_k_units_per_layer(paths_app):
    app = paths_app
    for k in app.rec["ks"]:
        app.controls["k"].value = k
        for layer in app.state()["layers"]:
            assert len(layer["selected"]) <= k


def test_layer_shrinkage_sliders_switch_runs_and_play_steps():
    app = apps.layer_shrinkage()

    def fig():
        return snapshot(app.figures["widths"])

    before = fig()
    app.controls["prune_rate"].value = 0.2
    assert fig() != before
    s = fig()
    app.controls["k"].value = 160
    assert fig() != s
    s = fig()
    app.controls["prune"].value = 1
    assert fig() != s
    assert "final widths" in app.figures["widths"].layout.title.text


def test_layer_shrinkage_run_live_adds_a_live_run():
    app = apps.layer_shrinkage()
    result = app.run_live(train_limit=500, epochs=1)
    assert result["live"] and "(live run)" in app.figures["widths"].layout.title.text
    assert app.progress.value == app.progress.max


def test_k_explorer_k_changes_both_figures():
    app = apps.k_explorer()
    g = json.dumps(app.figures["gradient"].layout.title.text)
    app.controls["k"].value = 80
    assert app.figures["accuracy"].layout.shapes[0].x0 == 80
    assert json.dumps(app.figures["gradient"].layout.title.text) != g
    colors = app.figures["gradient"].data[0].marker.color
    assert sum(c == "#d62728" for c in colors) <= 80


def test_layer_shrinkage_on_stored_pos_runs_has_no_live_button():
    from mesimp_lib.experiments import results_dir
    from mesimp_lib.results import read_json
    from mesimp_lib.viz import layer_shrinkage

    runs = {(r["config"]["prune_rate"], r["config"]["k"]): r
            for r in map(read_json, sorted(results_dir("pos_ud_rates").glob("*.json")))}
    app = layer_shrinkage(runs=runs)
    assert app.controls["run_live"].layout.display == "none"
    names = [t.name for t in app.figures["widths"].data]
    assert any("forward LSTM cells" in n for n in names) and any("backward LSTM cells" in n for n in names)
    before = [list(t.y) for t in app.figures["widths"].data[:2]]
    app.controls["prune_rate"].value = 0.05
    assert [list(t.y) for t in app.figures["widths"].data[:2]] != before


def test_panes_hold_plain_figures_in_output_widgets():
    """No FigureWidget (anywidget's 2 s model-load limit froze plots): each pane is a core
    Output widget whose one output is the plotly mime bundle, sized by its container."""
    import ipywidgets as W
    import plotly.graph_objects as go

    app = apps.k_explorer()
    for name, pane in app.panes.items():
        assert isinstance(pane.widget, W.Output) and type(pane.figure) is go.Figure, name
        (out,) = pane.widget.outputs
        fig = out["data"]["application/vnd.plotly.v1+json"]
        assert "width" not in fig["layout"] and fig["layout"]["autosize"] is True
        assert fig["config"]["responsive"] is True
    before = app.panes["gradient"].widget.outputs
    app.controls["example"].value = 2
    assert app.panes["gradient"].widget.outputs != before
