"""meAct (reconstruction): inactive units reuse stored activations and get no gradient;
dev/test forward is dense; the update-magnitude metric is the optimizer's real step."""

import pytest
import torch
import torch.nn.functional as F

from mesimp_lib import MLP
from mesimp_lib.meact import MeAct
from mesimp_lib.training import TrainConfig, train

torch.set_num_threads(1)


def tiny():
    torch.manual_seed(0)
    return MLP(in_features=6, hidden=[8, 8], out_features=3).double()


def visit(model, meact, x, y, ids):
    meact.set_batch(ids)
    model.zero_grad(set_to_none=True)
    out = model(x[ids])
    F.cross_entropy(out, y[ids]).backward()
    return out


def test_inactive_units_reuse_stored_values_and_get_no_gradient():
    model = tiny()
    x = torch.randn(4, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    ids = torch.arange(4)
    meact = MeAct(model, n_examples=4, threshold=1.0)
    visit(model, meact, x, y, ids)  # normal pass: scores and stored activations
    stored = [p.clone() for p in meact.previous]
    with torch.no_grad():  # change the weights so fresh activations differ from the stored ones
        for layer in model.hidden:
            layer.weight.mul_(1.5)
    meact.start()
    inactive = [~meact.active_mask(i, ids) for i in range(2)]
    assert all(m.any() for m in inactive)  # the threshold makes some units inactive
    captured = {}

    class Capture:  # wraps meAct's observer to see what the next layer receives
        def activation(self, i, h):
            out = meact.activation(i, h)
            out.retain_grad()
            captured[i] = out
            return out

    assert model.activation_observer is meact  # MeAct registered itself through MLP.observe_activations
    model.observe_activations(Capture())
    visit(model, meact, x, y, ids)
    for i in range(2):
        h = captured[i]
        m = inactive[i]
        torch.testing.assert_close(h[m], stored[i][ids][m].to(h.dtype))  # stored values reused
    # no gradient reaches the pre-activation of an inactive unit: its score stops growing
    before = meact.scores[0].clone()
    visit(model, meact, x, y, ids)
    grew = meact.scores[0] != before
    assert not (grew & inactive[0]).any()
    assert meact.stats()["active_units_per_example"] is not None


def test_dev_and_test_forward_is_dense():
    model = tiny()
    x = torch.randn(4, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    meact = MeAct(model, n_examples=4)
    visit(model, meact, x, y, torch.arange(4))
    meact.start()
    model.eval()
    with torch.no_grad():
        a = model(x)
    meact.detach()
    with torch.no_grad():
        b = model(x)
    torch.testing.assert_close(a, b)


def test_update_magnitude_matches_hand_computation():
    """The trainer's metric is mean |theta_after - theta_before| over all parameters."""
    cfg = TrainConfig(method="dense", hidden=4, layers=1, epochs=1, batch_size=50, train_limit=50, rows_every=1,
                      evals_per_epoch=1)
    r = train(cfg, progress=False, return_model=True)
    # recompute by hand: same seed, same first batch, one Adam step
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    from mesimp_lib.tasks.mnist import load_mnist
    from mesimp_lib.training import build_model, make_optimizer

    d = load_mnist()
    model = build_model(cfg)
    opt = make_optimizer(cfg, model.parameters())
    perm = torch.randperm(50, generator=gen)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    F.cross_entropy(model(d.train_x[:50][perm]), d.train_y[:50][perm]).backward()
    opt.step()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    hand = float((after - before).abs().mean())
    assert r["updates"]["samples"][0]["mean_abs_update"] == pytest.approx(hand, rel=1e-5)
    # Adam's first step moves every parameter with a gradient by about lr: a sanity bound
    assert 0 < hand <= 1e-3 * 1.01


def test_meact_config_and_errors():
    with pytest.raises(ValueError, match="meact_start_epoch=0"):
        TrainConfig(method="meact", meact_start_epoch=0)
    with pytest.raises(ValueError, match="meact_statistic='x'"):
        TrainConfig(method="meact", meact_statistic="x")
    with pytest.raises(ValueError, match="threshold=-1"):
        MeAct(tiny(), 4, threshold=-1)


def test_meact_run_identical_to_baseline_until_switch_on():
    common = dict(hidden=32, epochs=2, batch_size=50, train_limit=500, rows_every=2, evals_per_epoch=2, seed=5)
    base = train(TrainConfig(method="dense", **common), progress=False)
    ma = train(TrainConfig(method="meact", meact_start_epoch=1, **common), progress=False)
    assert base["history"][:2] == ma["history"][:2]  # epoch 0: identical
    assert base["history"][2:] != ma["history"][2:]  # meAct switched on at epoch 1
    assert ma["meact"]["memory_bytes"] == 2 * 2 * 500 * 32 * 2
    assert 0 < ma["meact"]["active_share"][0] < 1
