"""Stored results: re-computable, with provenance, and the README tables are generated from them."""

import json
from pathlib import Path

import pytest

from mesimp_lib import experiments
from mesimp_lib.training import train

ROOT = Path(__file__).resolve().parents[1]


def test_quick_entry_recomputes_identically():
    cfg = experiments.SUITES["quick"]()["topk-k20"]
    stored = json.loads((experiments.results_dir("quick") / "topk-k20.json").read_text())
    fresh = train(cfg, progress=False)
    assert [h["dev_acc"] for h in fresh["history"]] == [h["dev_acc"] for h in stored["history"]]
    assert fresh["test_acc"] == stored["test_acc"]


def test_every_stored_result_has_command_and_provenance():
    files = list((ROOT / "data" / "results").rglob("*.json"))
    assert files
    for f in files:
        r = json.loads(f.read_text())
        assert "command" in r and "environment" in r, f
        assert r["environment"].get("torch"), f


@pytest.mark.parametrize("suite", [*experiments.SUITES, "mesimp_inference"])
def test_readme_tables_are_generated_not_typed(suite):
    text = (ROOT / "README.md").read_text()
    start, end = f"<!-- results:{suite} -->", f"<!-- /results:{suite} -->"
    if start not in text:
        pytest.skip(f"README has no table for {suite}")
    block = text[text.index(start) + len(start) : text.index(end)]
    assert block.strip() == experiments.summarize_suite(suite).strip()
