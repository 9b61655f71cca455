"""Trainer: deterministic, complete results, validated configs, models."""

import json

import pytest
import torch
from torch import nn

from mesimp_lib import MLP
from mesimp_lib.results import write_json_atomic
from mesimp_lib.training import TrainConfig, train

QUICK = dict(epochs=1, train_limit=300, batch_size=10, evals_per_epoch=2, rows_every=5, hidden=64)


def test_result_has_required_fields_and_is_json():
    r = train(TrainConfig(method="meprop", k=8, **QUICK), progress=False)
    for key in ("config", "best_dev_acc", "test_acc", "best_epoch", "history", "timing", "backprop_ratio"):
        assert key in r
    assert set(r["timing"]) >= {"forward_s", "backward_s", "update_s"}
    assert r["backprop_ratio"] == pytest.approx(8 / 64)
    assert len(r["history"]) == 2
    json.dumps(r, allow_nan=False)


def test_same_seed_same_result_different_seed_differs():
    a = train(TrainConfig(method="meprop", k=8, seed=3, **QUICK), progress=False)
    b = train(TrainConfig(method="meprop", k=8, seed=3, **QUICK), progress=False)
    c = train(TrainConfig(method="meprop", k=8, seed=4, **QUICK), progress=False)
    assert a["history"] == b["history"]
    assert a["history"] != c["history"]


def test_threads_restored():
    before = torch.get_num_threads()
    train(TrainConfig(method="dense", threads=1, **QUICK), progress=False)
    assert torch.get_num_threads() == before


def test_adam_moves_rows_without_gradient():
    """Teaching point measured by the trainer: with Adam, rows with zero gradient still change."""
    r = train(TrainConfig(method="meprop", mode="unified", k=2, **QUICK), progress=False)
    with_grad, changed = r["rows"]["with_grad"], r["rows"]["changed"]
    assert all(w <= 2 / 64 + 1e-9 for w in with_grad)
    assert changed[0] > with_grad[0]


def test_adagrad_moves_only_rows_with_gradient():
    r = train(TrainConfig(method="meprop", mode="unified", k=2, optimizer="adagrad", **QUICK), progress=False)
    assert r["rows"]["changed"] == pytest.approx(r["rows"]["with_grad"], abs=1e-9)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(method="sparse"), "method='sparse'.*dense, meprop, random"),
        (dict(mode="topk"), "mode='topk'"),
        (dict(k=-1), "k=-1 is negative"),
        (dict(k=1.5), "k=1.5 is a fraction"),
        (dict(batch_size=0), "batch_size=0"),
        (dict(epochs=0), "epochs=0"),
        (dict(dropout=1.0), "dropout=1.0"),
        (dict(optimizer="rmsprop"), "optimizer='rmsprop'"),
        (dict(train_limit=0), "train_limit=0"),
        (dict(lr=0.0), "lr=0.0"),
        (dict(weight_grad="sparse"), "optimizer='adam'.*sgd, lazy_adam or lazy_sgd"),
        (dict(weight_grad="sparse", optimizer="lazy_adam", grad_clip=5.0), "grad_clip=5.0"),
        (dict(task="pos", kernel="fused"), "kernel='fused'.*task='pos'"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_config_prints_as_command():
    c = TrainConfig(method="meprop", mode="unified", k=20, batch_size=50, seed=2)
    assert str(c) == "python -m mesimp_lib train --task mnist --method meprop --k 20 --mode unified --batch-size 50 --seed 2"


def test_mlp_shapes_dropout_and_export():
    torch.manual_seed(0)
    m = MLP(hidden=[30, 20], k=5, dropout=0.2, mode="unified")
    assert m.widths == [30, 20] and m.hidden[0].k_effective == 5 and m.output.k_effective is None
    seq = m.to_sequential()
    assert all(isinstance(x, (nn.Linear, nn.ReLU)) for x in seq)
    x = torch.rand(4, 784)
    m.eval()
    assert torch.equal(seq(x), m(x))
    with pytest.raises(ValueError, match="layers=0"):
        MLP(layers=0)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    p = tmp_path / "r.json"
    write_json_atomic(p, {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(p, {"a": float("nan")})  # NaN is not valid JSON: refused, old file kept
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_mesimp_mask_mode_reports_live_widths_like_physical():
    """In mask mode the tensors keep their shape; the reported widths are the units alive."""
    runs = {}
    for realisation in ("mask", "physical"):
        cfg = TrainConfig(method="mesimp", k=5, prune_rate=0.2, realisation=realisation, cycle_epochs=1,
                          prunes_per_epoch=2, **QUICK)
        runs[realisation] = train(cfg, progress=False)
    assert runs["mask"]["final_widths"] == runs["physical"]["final_widths"]
    assert max(runs["mask"]["final_widths"]) < 64
