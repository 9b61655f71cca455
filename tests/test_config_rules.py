"""Rules between fields that a reviewer found missing, and what a run records about its kernel."""

import pytest
import torch

from mesimp_lib.bench import bench_layer
from mesimp_lib.config import TrainConfig
from mesimp_lib.tasks.base import Task
from mesimp_lib.training import fit, train


@pytest.mark.parametrize("kwargs, name", [
    (dict(method="meprop", mode="random"), "mode"),  # trained random-k but was labelled meprop
    (dict(method="random", mode="unified"), "mode"),  # the mode was silently ignored
    (dict(hidden=[100, 100], layers=3), "layers"),  # silently became layers=2
])
def test_contradictory_fields_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}="):
        TrainConfig(**kwargs)


def test_one_width_list_reads_back_equal():
    cfg = TrainConfig(hidden=[300])
    assert (cfg.hidden, cfg.layers) == (300, 1)
    assert TrainConfig(hidden=[300, 200, 100]).layers == 3


def test_mesimp_on_a_task_without_simplifier_is_refused():
    class NoSimplifier(Task):
        model = torch.nn.Linear(2, 2)
        steps_per_epoch = 1
        stats_layers = []

    cfg = TrainConfig(method="mesimp", epochs=1)
    with pytest.raises(ValueError, match="needs a simplifier"):
        fit(cfg, NoSimplifier(cfg), progress=False)


def test_result_says_which_backward_ran():
    r = train(TrainConfig(epochs=1, train_limit=50, evals_per_epoch=1, rows_every=0), progress=False)
    assert r["environment"]["meprop_backward"].startswith(("fused C++ kernels", "pure PyTorch ("))
    r = train(TrainConfig(epochs=1, train_limit=50, evals_per_epoch=1, rows_every=0, kernel="torch"), progress=False)
    assert "meprop_backward" not in r["environment"]


def test_bench_gives_the_thread_count_back():
    torch.set_num_threads(1)
    bench_layer(4, 64, 4, threads=2, scale=0.05)
    assert torch.get_num_threads() == 1
