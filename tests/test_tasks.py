"""The Task interface: fit(config, task) runs any task, the registry, the import direction, NativeMLP as the
opt-in whole-network model of kernel="native", and the MLP's activation observer."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mesimp_lib import training
from mesimp_lib.tasks import TASKS, Task
from mesimp_lib.tasks.base import shuffled_batches
from mesimp_lib.tasks.mlp import MLP
from mesimp_lib.tasks.native_mlp import NativeMLP
from mesimp_lib.training import TrainConfig, fit, train

torch.set_num_threads(1)


class Blobs(Task):
    """A task written in a test: two Gaussian blobs, the MLP, accuracy. Records the hooks fit calls."""

    name = "blobs"

    def __init__(self, config):
        self.config = config
        gen = torch.Generator().manual_seed(0)
        self.x = torch.cat([torch.randn(60, 4, generator=gen) + 2, torch.randn(60, 4, generator=gen) - 2])
        self.y = torch.cat([torch.zeros(60), torch.ones(60)]).long()
        self.gen = torch.Generator().manual_seed(config.seed)
        self.model = MLP(in_features=4, hidden=[8], out_features=2, k=config.hidden_k)
        self.steps_per_epoch = 12
        self.stats_layers = list(self.model.hidden)
        self.calls = {"start_epoch": [], "before_step": 0, "finish": 0}

    def batches(self, epoch):
        return shuffled_batches(len(self.y), 10, self.gen, "cpu")

    def loss(self, idx):
        return F.cross_entropy(self.model(self.x[idx]), self.y[idx])

    def evaluate(self):
        return {"dev_acc": self.dev_score(), "test_acc": self.dev_score()}

    def dev_score(self):
        with torch.no_grad():
            return float((self.model(self.x).argmax(1) == self.y).float().mean())

    def start_epoch(self, epoch):
        self.calls["start_epoch"].append(epoch)

    def before_step(self, batch):
        self.calls["before_step"] += 1

    def finish(self, result):
        self.calls["finish"] += 1
        result["blobs"] = True
        return result


def test_fit_runs_a_task_written_outside_the_library():
    config = TrainConfig(k=3, epochs=3, evals_per_epoch=2, rows_every=5, lr=0.05)
    task = Blobs(config)
    r = fit(config, task, progress=False, return_model=True)
    assert task.calls == {"start_epoch": [0, 1, 2], "before_step": 36, "finish": 1}
    assert len(r["history"]) == 6 and r["timing"]["steps"] == 36 and r["blobs"] is True
    assert r["model"] is task.model and r["widths"] == [8]
    assert r["best_dev_acc"] > 0.9  # two well separated blobs
    assert len(r["rows"]["with_grad"]) == 1 and r["updates"]["samples"][0]["step"] == 0


def test_the_registry_has_every_task_the_config_allows():
    with pytest.raises(ValueError, match="task='nope'") as e:
        TrainConfig(task="nope")
    allowed = str(e.value).split("allowed: ")[1].split(", ")
    assert sorted(allowed) == sorted(TASKS)
    for name, cls in TASKS.items():
        assert issubclass(cls, Task) and cls.name == name and TrainConfig(task=name).task == name


def test_tasks_do_not_import_training():
    code = ("import sys, mesimp_lib.tasks, mesimp_lib.tasks.pos, mesimp_lib.tasks.parser; "
            "print('mesimp_lib.training' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_one_data_root():
    from mesimp_lib.tasks import mnist, paths, ud

    assert mnist.data_root is paths.data_root and ud.data_root is paths.data_root


def test_native_mlp_has_the_mlps_parameters():
    torch.manual_seed(0)
    plain = MLP(in_features=12, hidden=[9, 7], out_features=3, k=2)
    torch.manual_seed(0)
    native = NativeMLP(in_features=12, hidden=[9, 7], out_features=3, k=2)
    assert list(plain.state_dict()) == list(native.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), native.state_dict().values()))
    assert all(layer.kernel == "native" for layer in native.meprop_layers())
    assert not hasattr(plain, "step_in_backward") and not hasattr(plain, "fuse_native")


def test_training_builds_the_native_mlp_only_for_kernel_native():
    assert type(training.build_model(TrainConfig(kernel="native"))) is NativeMLP
    for kernel in ("auto", "torch", "fused"):
        assert type(training.build_model(TrainConfig(kernel=kernel))) is MLP


def test_kernel_native_trains_as_kernel_fused():
    from mesimp_lib.fused import kernels

    if kernels() is None:
        pytest.skip("native kernels cannot be built here")
    common = dict(k=5, hidden=16, epochs=2, batch_size=20, train_limit=200, optimizer="lazy_adam", rows_every=3,
                  evals_per_epoch=2)
    fused = train(TrainConfig(kernel="fused", **common), progress=False, return_model=True)
    native = train(TrainConfig(kernel="native", **common), progress=False, return_model=True)
    assert type(native["model"]) is NativeMLP and type(fused["model"]) is MLP
    assert native["history"] == fused["history"] and native["rows"] == fused["rows"]
    assert native["updates"] == fused["updates"] and native["meprop"] == fused["meprop"]
    for a, b in zip(native["model"].parameters(), fused["model"].parameters()):
        assert torch.equal(a, b)


def test_activation_observer_sees_and_replaces_activations():
    torch.manual_seed(0)
    model = MLP(in_features=5, hidden=[6, 4], out_features=2)
    x = torch.randn(3, 5)
    seen = []
    model.observe_activations(SimpleNamespace(activation=lambda i, h: seen.append((i, h.shape)) or h * 0))
    out = model(x)
    assert seen == [(0, torch.Size([3, 6])), (1, torch.Size([3, 4]))]
    torch.testing.assert_close(out, model.output.bias.expand(3, 2))  # zeroed activations: only the bias is left
    model.observe_activations(None)
    assert model.activation_observer is None and not torch.equal(model(x), out)
    with pytest.raises(TypeError, match="activation"):
        model.observe_activations(lambda i, h: h)
