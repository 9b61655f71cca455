"""The command line: a quick run writes JSON; bad arguments give one line naming the argument."""

import json
import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "mesimp_lib", *args], capture_output=True, text=True)


def test_train_writes_json(tmp_path):
    out = tmp_path / "out.json"
    p = run("train", "--task", "mnist", "--method", "meprop", "--k", "10", "--mode", "unified", "--hidden", "50",
            "--epochs", "1", "--batch-size", "20", "--train-limit", "200", "--seed", "1", "--threads", "1",
            "--json", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert r["config"]["k"] == 10 and r["config"]["mode"] == "unified"
    assert "test accuracy" in p.stdout and "backprop ratio      20.00%" in p.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--k", "-5"], "k=-5"),
        (["--k", "abc"], "argument --k"),
        (["--method", "foo"], "argument --method"),
        (["--batch-size", "0"], "batch_size=0"),
        (["--epochs", "x"], "argument --epochs"),
        (["--dropout", "2"], "dropout=2.0"),
    ],
)
def test_bad_arguments_one_line(args, needle):
    p = run("train", *args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr


def test_bench_quick_runs_and_is_correct(tmp_path):
    out = tmp_path / "b.json"
    p = run("bench", "--quick", "--json", str(out))
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert all(row["correct"] for row in r["layer"])
    # a generous ratio on one large shape (PERFORMANCE.md measured 8.6-20x here, with the row-sparse weight
    # gradient; the default dense one also zero-fills an [n, n] tensor); never an absolute time
    big = [row for row in r["layer"] if row["n"] == 2048 and row["mode"] == "unified"
           and row["weight_grad"] == "sparse" and row["kernel"] == "torch"][0]
    assert big["speedup"] > 3
    # the floor row: a backward node doing no work beats the dense backward of the paper's MLP
    assert r["floor"] and r["floor"][0]["batch"] == 10 and r["floor"][0]["speedup"] > 1
    assert r["floor"][0]["grad_speedup"] > 1 and r["floor"][0]["node"] in ("C++", "Python")
    # every MLP row has both measurements: loss.backward() and the model backward from the output gradient
    assert r["mlp"] and all(row["grad_speedup"] > 0 and row["grad_meprop_ms"] > 0 for row in r["mlp"])
