"""Argument checks at the boundary (issue 17): one error naming the argument, the value and what is
allowed; no silent coercion; the command line exits 2 naming the flag."""

import contextlib
import io
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from mesimp_lib import cli, experiments
from mesimp_lib.lazy import LazyAdam
from mesimp_lib.lstm import MePropLSTM
from mesimp_lib.meprop import MePropLinear
from mesimp_lib.tasks.mnist import MLP
from mesimp_lib.training import TrainConfig
from mesimp_lib.validate import ArgumentError, check_bool, check_device, check_float, check_int, check_sizes


@pytest.mark.parametrize("value", ["5", True, 2.7, None, [5], float("nan")])
def test_check_int_refuses_what_is_not_an_int(value):
    with pytest.raises(ArgumentError, match=r"^hidden=.* is not allowed; allowed: an int") as e:
        check_int("hidden", value, 1)
    assert isinstance(e.value, ValueError) and isinstance(e.value, TypeError) and e.value.name == "hidden"


def test_checks_return_plain_python_values():
    assert check_int("n", np.int64(3), 1) == 3 and type(check_int("n", np.int64(3), 1)) is int
    assert check_int("n", None, 1, optional=True) is None
    assert check_float("lr", 1, 0.0, lo_open=True) == 1.0
    assert check_sizes("hidden", (3, np.int32(4))) == [3, 4]
    assert check_bool("flag", np.bool_(True)) is True


@pytest.mark.parametrize("value", ["False", 0, 1, None, "true"])
def test_check_bool_refuses_non_bools(value):
    with pytest.raises(ArgumentError, match="sparsify_bias=.*True or False"):
        check_bool("sparsify_bias", value)


@pytest.mark.parametrize("value,match", [(0.0, "> 0.0"), (float("inf"), "finite"), (-1, "> 0.0")])
def test_check_float_ranges(value, match):
    with pytest.raises(ArgumentError, match=match):
        check_float("lr", value, 0.0, lo_open=True)


@pytest.mark.parametrize("value", ["foo", "meta", "mps", "", "cpu cpu", 3, None])
def test_check_device(value):
    with pytest.raises(ArgumentError, match="device="):
        check_device("device", value)
    assert check_device("device", "cpu") == "cpu" and check_device("device", torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_cuda_refused_without_a_gpu():
    with pytest.raises(ArgumentError, match="no CUDA device"):
        TrainConfig(device="cuda")


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: TrainConfig(device=None), "device"),  # was AttributeError
        (lambda: TrainConfig(hidden="5"), "hidden"),
        (lambda: TrainConfig(hidden=True), "hidden"),
        (lambda: TrainConfig(hidden=2.7), "hidden"),
        (lambda: TrainConfig(hidden=[5, "6"]), "hidden[1]"),
        (lambda: TrainConfig(count_zero_hits="False"), "count_zero_hits"),
        (lambda: TrainConfig(seed=2**64), "seed"),
        (lambda: TrainConfig(lr=float("inf")), "lr"),
        (lambda: TrainConfig(meact_threshold=float("nan")), "meact_threshold"),
        (lambda: MLP(hidden="5"), "hidden"),
        (lambda: MLP(hidden=True), "hidden"),
        (lambda: MLP(hidden=2.7), "hidden"),
        (lambda: MLP(k_out="5"), "k_out"),
        (lambda: MePropLinear(4, 3, sparsify_bias="False"), "sparsify_bias"),  # "False" used to turn it on
        (lambda: MePropLinear(4, 3, dtype=torch.int64), "dtype"),
        (lambda: MePropLinear(2**31, 3), "in_features"),  # refused before allocating 2**31 columns
        (lambda: MePropLSTM(4, 3, reverse="no"), "reverse"),
        (lambda: LazyAdam([torch.nn.Parameter(torch.zeros(2))], betas=0.9), "betas"),
        (lambda: LazyAdam([torch.nn.Parameter(torch.zeros(2))], eps=None), "eps"),
    ],
)
def test_constructors_name_the_bad_argument(make, name):
    with pytest.raises((ValueError, TypeError)) as e:
        make()
    assert str(e.value).startswith(f"{name}="), str(e.value)


def test_valid_config_unchanged():
    c = TrainConfig(hidden=[30, np.int64(20)], seed=np.int64(7), k=np.int64(5), lr=np.float32(0.5), dropout=0)
    assert c.hidden == [30, 20] and c.layers == 2 and type(c.seed) is int and type(c.k) is int
    assert c.lr == 0.5 and type(c.lr) is float and c.dropout == 0.0
    json.dumps(asdict(c))  # NumPy scalars would make the result JSON fail after training
    assert str(TrainConfig(method="meprop", k=20, seed=2)) == "python -m mesimp_lib train --task mnist --method meprop --k 20 --seed 2"


def _cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["train", "--device", "meta"], "--device"),
        (["train", "--device", "mps"], "--device"),
        (["train", "--seed", str(2**64)], "--seed"),
        (["train", "--hidden", "5,x"], "--hidden"),
        (["train", "--lr", "nan"], "--lr"),
        (["experiment", "quick", "--device", "cuda --epochs 1"], "--device"),
        (["experiment", "quick", "--device", "foo"], "--device"),
        (["experiment", "quick", "--jobs", "0"], "--jobs"),
        (["experiment", "quick", "--seeds", "1,-2"], "--seeds"),
        (["bench", "--rounds-scale", "0"], "--rounds-scale"),
    ],
)
def test_cli_exits_2_naming_the_flag(argv, flag):
    code, err = _cli(*argv)
    assert code == 2 and f"argument {flag}:" in err and len(err.strip().splitlines()) == 1, err


def test_suite_commands_parse_back_to_their_config(tmp_path):
    """The child command of a suite run is split as the shell would (shlex), not on spaces."""
    for cfg in list(experiments.SUITES["quick"]().values()) + [TrainConfig(hidden=[30, 20], lr=1e-4, grad_clip=5.0)]:
        cmd = experiments._command(cfg, tmp_path / "r.json")
        args = cli.build_parser().parse_args(cmd[3:])
        assert TrainConfig(**{f: getattr(args, f) for f in TrainConfig.__dataclass_fields__}) == cfg


@pytest.mark.parametrize("argv", [["experiment", "bogus"], ["experiment", "widgets", "--verify"],
                                  ["experiment", "bogus", "--verify"]])
def test_unknown_suite_exits_2(argv):
    code, err = _cli(*argv)
    assert code == 2 and "argument suite:" in err and "allowed: all, meprop_mnist" in err, err
