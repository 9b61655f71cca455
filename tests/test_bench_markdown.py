"""benchmarks/RESULTS.md is generated from benchmarks/results.json by bench.to_markdown (never typed), and a
result without some kinds of rows gives a report without their sections."""

import json
from pathlib import Path

from mesimp_lib.bench import to_markdown

ROOT = Path(__file__).resolve().parents[1]


def _stored():
    return json.loads((ROOT / "benchmarks" / "results.json").read_text())


def test_results_md_is_the_markdown_of_results_json():
    assert to_markdown(_stored()) == (ROOT / "benchmarks" / "RESULTS.md").read_text()


def test_sections_follow_the_rows_present():
    res = _stored()
    full = to_markdown(res)
    titles = ["## Issue 16 targets", "## One square layer", "## The paper's MNIST MLP, whole backward",
              "**The floor at these shapes.**", "## The paper's MNIST MLP, whole training step", "## LSTM step",
              "## Inference of meSimp"]
    assert [full.index(t) for t in titles] == sorted(full.index(t) for t in titles)
    bare = to_markdown({**res, "targets": [], "floor": [], "step": [], "lstm": [], "inference": []})
    assert all(t not in bare for t in titles[:1] + titles[3:]) and all(t in bare for t in titles[1:3])
    # a whole-step row stored without its section times shows dashes
    no_sections = to_markdown({**res, "step": [{**res["step"][0], "sections": {}}]})
    assert "| - | - |" in no_sections.split("## The paper's MNIST MLP, whole training step")[1]
