"""TrainConfig: every field declared once (help, kind, choices, bounds); the CLI generated from the declarations
and ``to_cli()`` parse back to the same config."""

from dataclasses import fields

import pytest

from mesimp_lib import cli
from mesimp_lib.config import KINDS, TrainConfig
from mesimp_lib.experiments import SUITES
from mesimp_lib.validate import ArgumentError

CONFIGS = [
    TrainConfig(),
    TrainConfig(method="dense", k=None, hidden=[30, 20], lr=1e-4, grad_clip=5.0, dropout=0.2),
    TrainConfig(method="random", k=0.05, rescale=True, mode="per_example", k_out=3, kernel="torch"),
    TrainConfig(method="mesimp", authors=True, epochs=3),
    TrainConfig(method="meprop", authors=True, optimizer="adagrad"),
    TrainConfig(method="meprop", optimizer="lazy_adam", kernel="fused", train_limit=100, rows_every=0),
    TrainConfig(method="mesimp", k=20, prune_rate=0.2, realisation="mask", reset="moments", record="unified",
                count_zero_hits=True, min_units=3, cycle_epochs=1, prunes_per_epoch=2),
    TrainConfig(method="meact", meact_start_epoch=2, meact_threshold=0.5, meact_statistic="max_ratio", seed=7),
    TrainConfig(task="pos", method="meprop", k=5, tagset="xpos", embed_dim=32, min_count=1, kernel="torch"),
    TrainConfig(task="parse", method="mesimp", k=20, activation="relu", batch_size=256, optimizer="lazy_sgd"),
    TrainConfig(init="csharp", loss_reduction="sum", threads=2, evals_per_epoch=8, seed=2**64 - 1),
    TrainConfig(optimizer="lazy_adam", weight_grad="dense"),  # not the lazy optimizer's default ("sparse")
    TrainConfig(optimizer="lazy_sgd", weight_grad="dense", k=0.05),
]


def _parse(command: str) -> TrainConfig:
    import shlex

    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "mesimp_lib", "train"]
    return cli.config_from_args(cli.build_parser().parse_args(argv[3:]))


@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
def test_to_cli_parses_back_to_the_config(cfg):
    assert _parse(cfg.to_cli()) == cfg


def test_every_suite_config_round_trips():
    for suite in ("quick", "meprop_mnist", "mesimp_mnist", "k_grid", "pos_ud", "lazy_mnist"):
        for name, cfg in SUITES[suite]().items():
            assert _parse(cfg.to_cli()) == cfg, (suite, name)


def test_every_field_is_declared_once_and_the_cli_shows_its_help():
    parser = cli.build_parser()
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    flags = {a.dest: a for a in train._actions}
    for f in fields(TrainConfig):
        meta = f.metadata
        assert meta["kind"] in KINDS and len(meta["help"]) > 10, f.name
        action = flags[f.name]
        assert action.help.startswith(meta["help"]) and action.default == f.default, f.name
        assert tuple(action.choices or ()) == tuple(meta["choices"] or ()), f.name


@pytest.mark.parametrize("name,value,allowed", [
    ("task", "cifar", "mnist, pos, parse"),
    ("method", 3, "dense, meprop"),
    ("rescale", "False", "True or False"),
    ("layers", 0, "an int in [1, "),
    ("epochs", 2.5, "an int in [1, "),
    ("rows_every", -1, "an int in [0, "),
    ("seed", 2**64, "an int in [0, 18446744073709551615]"),
    ("train_limit", 0, "None or an int in [1, "),
    ("dropout", 1.0, "a finite number in [0.0, 1.0)"),
    ("lr", 0.0, "None or a finite number > 0.0"),
    ("prune_rate", 1.5, "a finite number in [0.0, 1.0]"),
    ("hidden", [10, 0], "an int in [1, "),
    ("activation", "tanh", "None, cube, relu"),
    ("device", "tpu", "'cpu'"),
])
def test_a_bad_value_names_the_field_and_what_is_allowed(name, value, allowed):
    with pytest.raises(ArgumentError, match=r"\b" + name) as e:
        TrainConfig(**{name: value})
    assert allowed in str(e.value)


def test_plain_python_types_come_out():
    import numpy as np

    cfg = TrainConfig(hidden=np.int64(40), k=np.int64(5), dropout=np.float32(0.25), rescale=False,
                      count_zero_hits=np.bool_(True))
    assert type(cfg.hidden) is int and type(cfg.k) is int and type(cfg.dropout) is float
    assert type(cfg.count_zero_hits) is bool
