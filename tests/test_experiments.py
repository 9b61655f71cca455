"""The stored suites: every run of every suite is stored and counts as done, and every stored command
reproduces its stored config (the kernel included, now that the default is "auto")."""

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from mesimp_lib import cli, experiments, suites, tables
from mesimp_lib.config import stored_config
from mesimp_lib.results import results_dir

ROOT = Path(__file__).resolve().parents[1]
STORED = sorted((ROOT / "data" / "results").glob("*/*.json"))


@pytest.mark.parametrize("suite", list(suites.SUITES))
def test_every_run_of_a_suite_is_stored_and_counts_as_done(suite):
    """A stored run made before a config field existed reads as the value it had (kernel 'torch'), so a
    suite re-run after the default became 'auto' re-trains nothing."""
    runs = suites.SUITES[suite]()
    assert runs
    for name, cfg in runs.items():
        path = results_dir(suite) / f"{name}.json"
        assert path.exists(), path
        assert experiments._same_config(json.loads(path.read_text())["config"], cfg), path
        if suite not in suites.OWN_KERNEL:
            assert cfg.kernel == "torch", (suite, name)


def test_a_stored_config_without_kernel_reads_as_torch():
    stored = json.loads((results_dir("k_grid") / "dense-s1.json").read_text())["config"]
    assert "kernel" not in stored
    assert stored_config(stored).kernel == "torch"
    assert stored_config({**stored, "kernel": "auto"}).kernel == "auto"


@pytest.mark.parametrize("path", [p for p in STORED if p.parent.name != "mesimp_inference"],
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_stored_command_gives_its_stored_config(path):
    result = json.loads(path.read_text())
    argv = shlex.split(result["command"])
    assert argv[:4] == ["python", "-m", "mesimp_lib", "train"]
    parsed = cli.config_from_args(cli.build_parser().parse_args(argv[3:]))
    stored = stored_config(result["config"])
    if stored.task == "pos":  # the LSTM layers pick their own backward: the stored commands name no kernel
        parsed = replace(parsed, kernel=stored.kernel)
    assert replace(parsed, device="cpu") == replace(stored, device="cpu")


def test_the_notebooks_imports_and_the_tables():
    from mesimp_lib.experiments import results_dir as rd, summarize_suite

    assert rd("quick") == results_dir("quick")
    quick = summarize_suite("quick")
    assert quick == tables.summarize_suite("quick")
    assert "--train-limit 2000 --kernel torch`" in quick  # the stored commands reproduce (kernel pinned)
    assert summarize_suite("dense_h_k") == ""  # shown inside k_grid's table
