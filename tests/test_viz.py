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
    assert app.controls["k"].layout.display == "none"  # one stored k: no slider that moves nothing
    assert "only k = 20 was run" in app.widget.children[-1].value
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


def test_active_paths_opens_on_a_correct_example_with_one_colour_scale(paths_app):
    app = paths_app
    app.controls["k"].value = app.rec["ks"][1]
    app.controls["step"].value = app.rec["steps"][-1]
    first = apps.ActivePathsApp()
    s = first.state()
    assert s["pred"] == s["label"], "the widget must open on a correctly classified example"
    assert "correct" in first.figures["network"].layout.title.text

    def cmax():
        return [t.marker.cmax for t in app.figures["network"].data if t.marker and t.marker.cmax is not None]

    scales = []
    for k in app.rec["ks"]:
        app.controls["k"].value = k
        scales.append(cmax())
        assert len(app.state()["edges"]) <= k  # the k strongest connections, not k^2 lines
    assert all(c == scales[0] for c in scales), scales
    legend = [t.name for t in app.figures["network"].data if t.showlegend is not False and t.name]
    assert "on this example's path (both hidden layers)" in legend and not any("layer 1)" in n for n in legend)


def test_k_explorer_gradient_is_sorted_and_states_the_kept_share():
    from mesimp_lib.viz.app_figures import kept_share

    app = apps.k_explorer()
    app.controls["k"].value = 20
    bars, share = app.figures["gradient"].data[:2]
    ys = list(bars.y)
    assert ys == sorted(ys, reverse=True)
    g = app.gradient()["g"]
    expected = 100 * sum(sorted((v * v for v in g), reverse=True)[:20]) / sum(v * v for v in g)
    assert f"carry {expected:.1f}% of the gradient's L2 mass" in app.figures["gradient"].layout.title.text
    assert f"{expected:.1f}%" in app.readout.value
    assert abs(share.y[19] - round(expected, 2)) < 0.02 and abs(share.y[-1] - 100) < 1e-6
    assert kept_share([3.0, 4.0]) == [16 / 25, 1.0]
    kept = [c for c in bars.marker.color if c != "#c7c7c7"]
    assert len(kept) <= 20 and list(bars.marker.color[: len(kept)]) == kept  # the kept ones are the largest
    acc = app.figures["accuracy"]
    assert list(acc.layout.xaxis.ticktext)[:3] == ["5", "10", "20"]  # log axis labels say k, not "2"
    assert any((t.name or "").startswith("dense, 500 units") for t in acc.data)


def test_layer_shrinkage_marks_dev_only_where_measured_and_states_the_cap():
    app = apps.layer_shrinkage()
    app.controls["prune_rate"].value = 0.2
    app.controls["k"].value = 20
    fig = app.figures["widths"]
    dev = next(t for t in fig.data if t.name == "dev accuracy after prune (%)")
    assert dev.mode == "markers"
    assert "at most k / rate = 100 units can survive a prune" in fig.layout.title.text


def test_layer_shrinkage_draws_the_dense_run_of_the_same_setting_only():
    app = apps.layer_shrinkage()
    assert app.dense is not None, "data/results/widgets/shrinkage-dense-reference.json is missing"
    names = [t.name for t in app.figures["widths"].data]
    assert "dense, same data and epochs: dev (%)" in names
    live = dict(app.current(), live=True)
    assert "dense, same data and epochs: dev (%)" not in [t.name for t in app.figure(None, live).data]
    other = dict(app.current(), config={**app.current()["config"], "train_limit": 5000})
    assert "dense, same data and epochs: dev (%)" not in [t.name for t in app.figure(None, other).data]
    assert app.static_figure().layout.sliders[0].steps[0].label == "rate 0.05, k 20"


def test_displaying_an_app_stores_the_static_figure_under_the_widget(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    app = apps.layer_shrinkage()
    app._ipython_display_()
    widget, static = shown
    assert "application/vnd.jupyter.widget-view+json" in widget and "run the cell" in widget["text/plain"]
    fig = static["application/vnd.plotly.v1+json"]
    assert len(fig["frames"]) == len(app.runs) and fig["layout"]["sliders"][0]["steps"]
    shown.clear()
    apps.layer_shrinkage(static=False)._ipython_display_()
    assert len(shown) == 1  # the Voila app: the live widget only


def test_app_server_command_has_the_classroom_settings():
    from mesimp_lib.viz.appserver import voila_command

    cmd = " ".join(voila_command(port=9000, token="abc", max_kernels=3, idle_minutes=5))
    for flag in ("--Voila.ip=127.0.0.1", "--port=9000", "--Voila.token=abc", "BoundedKernelManager.max_kernels=3",
                 "cull_idle_timeout=300", "cull_connected=True", "progressive_rendering=True", "config_file_paths="):
        assert flag in cmd, flag
    assert "--token" in voila_command(token="auto") and "--Voila.token=" in voila_command(token=None)
    with pytest.raises(ValueError, match="max_kernels=-1"):
        voila_command(max_kernels=-1)
    with pytest.raises(ValueError, match="idle_minutes=0"):
        voila_command(idle_minutes=0)


def test_active_paths_recording_has_both_dropout_rates_and_old_files_load(tmp_path):
    import torch

    from mesimp_lib.recordings import PATH_DROPOUTS, load_active_paths

    rec = load_active_paths()
    assert rec["format"] == "mesimp_lib.active_paths/2" and rec["dropouts"] == list(PATH_DROPOUTS) == [0.0, 0.2]
    for p in rec["dropouts"]:
        for k in rec["ks"]:
            assert [s["step"] for s in rec["runs"][p][k]] == rec["steps"], (p, k)
    # the two rates are different runs from the same initial weights
    first = {p: rec["runs"][p][8] for p in rec["dropouts"]}
    start, end = ({p: first[p][i]["state_dict"] for p in first} for i in (0, -1))
    assert all(torch.equal(start[0.0][n], start[0.2][n]) for n in start[0.0])
    assert not torch.equal(end[0.0]["hidden.0.weight"], end[0.2]["hidden.0.weight"])
    # a format /1 file (runs by k, no dropout) still loads, as the no-dropout recording; the app hides the slider
    old = {k: v for k, v in rec.items() if k != "dropouts"}
    old.update(format="mesimp_lib.active_paths/1", runs=rec["runs"][0.0])
    torch.save(old, tmp_path / "old.pt")
    loaded = load_active_paths(tmp_path / "old.pt")
    assert loaded["dropouts"] == [0.0] and loaded["runs"][0.0][8][-1]["step"] == rec["steps"][-1]
    app = apps.ActivePathsApp(recording=loaded, static=False)
    assert app.controls["dropout"].layout.display == "none"
    with pytest.raises(ValueError, match="dropout=0.2 was not recorded"):
        apps.ActivePathsApp(recording=loaded, dropout=0.2)


def test_active_paths_dropout_slider_switches_run_and_drops_units(paths_app):
    app = paths_app
    app.controls["dropout"].value = 0.0
    app.controls["k"].value, app.controls["step"].value = 8, app.rec["steps"][-1]
    before = snapshot(app.figures["network"])
    assert "no dropout" in app.figures["network"].layout.title.text
    app.controls["dropout"].value = 0.2
    assert snapshot(app.figures["network"]) != before
    assert "dropout 0.2" in app.figures["network"].layout.title.text
    s = app.state()
    assert s["dropout"] == 0.2 and sum(map(len, s["dropped"])) > 0
    for layer, dropped in zip(s["layers"], s["dropped"]):
        assert not set(layer["selected"]) & set(dropped)  # a dropped unit has no gradient: never on the path
        assert all(layer["g"][j] == 0 for j in dropped)
    assert app.state() == s  # the mask is fixed per example: redrawing shows the same units
    crosses = [t for t in app.figures["network"].data if str(t.name).startswith("dropped by dropout")]
    assert len(crosses) == 1 and len(crosses[0].x) == sum(map(len, s["dropped"]))
    app.controls["dropout"].value = 0.0
    assert snapshot(app.figures["network"]) == before


def test_active_paths_caption_says_what_the_dropout_run_shows(paths_app):
    """The caption's claims about the recording: the most-chosen unit is chosen less often with
    dropout, and dropout leaves no unit of layer 2 never chosen (at every k, final step)."""
    rec = paths_app.rec
    for k in rec["ks"]:
        final = {p: rec["runs"][p][k][-1] for p in rec["dropouts"]}
        for li in (0, 1):
            assert final[0.2]["counts"][li].max() < final[0.0]["counts"][li].max(), (k, li)
        assert int((final[0.2]["counts"][1] == 0).sum()) == 0 < int((final[0.0]["counts"][1] == 0).sum()), k
    assert "no unit of layer 2 is left never chosen" in paths_app.widget.children[-1].value


def test_active_paths_static_figure_covers_both_dropout_rates():
    app = apps.ActivePathsApp(dropout=0.2)
    fig = app.static_figure()
    labels = [s.label for s in fig.layout.sliders[0].steps]
    assert labels == [f"dropout {p}, k {k}" for p in (0.0, 0.2) for k in app.rec["ks"]]
    assert labels[fig.layout.sliders[0].active] == "dropout 0.2, k 8"
    assert fig.frames[0].data != fig.frames[len(app.rec["ks"])].data
