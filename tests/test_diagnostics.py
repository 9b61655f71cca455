"""mesimp_lib.diagnostics: the measurements of notebook 10, against plain torch / numpy oracles."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mesimp_lib.diagnostics import (ProbeConfig, RowProbe, adam_first_step, hidden_output_grads, probe_run,
                                    random_mass_share, sign_coherence, topk_mass_share)
from mesimp_lib.tasks.mnist import MLP, MnistData
from mesimp_lib.training import TrainConfig, train


def test_topk_mass_share_matches_a_numpy_oracle():
    g = torch.randn(7, 30)
    g[2] = 0.0  # a row without gradient is skipped
    ks = [1, 3, 10, 30]
    got = topk_mass_share(g, ks)
    sq = np.sort(g.numpy().astype(np.float64) ** 2, axis=1)[:, ::-1]
    sq = sq[sq.sum(1) > 0]
    want = np.stack([sq[:, :k].sum(1) / sq.sum(1) for k in ks], 1)
    assert got.shape == (6, 4)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    assert torch.all(got[:, -1] == 1.0) and torch.all(got.diff(dim=1) >= 0)


@pytest.mark.parametrize("k", [0, 31, 2.5, True])
def test_topk_mass_share_rejects_bad_k(k):
    with pytest.raises(ValueError, match="must be an int in"):
        topk_mass_share(torch.randn(3, 30), [k])


def test_topk_mass_share_needs_a_gradient():
    with pytest.raises(ValueError, match="no row with a non-zero entry"):
        topk_mass_share(torch.zeros(3, 5), [1])


def test_topk_carries_at_least_as_much_as_random_k():
    g = torch.randn(200, 50) ** 3
    top = topk_mass_share(g, [5])[:, 0]
    rnd = random_mass_share(g, 5, torch.Generator().manual_seed(0))
    assert rnd.shape == (200,) and torch.all(top >= rnd - 1e-12)
    assert abs(float(random_mass_share(torch.ones(400, 50), 5).mean()) - 0.1) < 1e-12  # equal entries: k / n


def test_adam_first_step_is_lr_whatever_the_gradient_size():
    grad = torch.tensor([1e-5, -2e-3, 0.3, -40.0], dtype=torch.float64)
    step = adam_first_step(grad, lr=1e-3)
    want = -1e-3 * grad / (grad.abs() + 1e-8)  # bias-corrected m / sqrt(v) = g / |g|
    torch.testing.assert_close(step, want, rtol=1e-9, atol=0.0)
    assert torch.all((step.abs() - 1e-3).abs() < 1e-6)


def test_sign_coherence_by_hand():
    rows = torch.tensor([[1.0, 2.0, -3.0, 0.0], [-1.0, -1.0, -2.0, -5.0], [0.0, 0.0, 0.0, 0.0]])
    c = sign_coherence(rows)
    assert c[0].item() == pytest.approx(2 / 3) and c[1].item() == 1.0 and math.isnan(c[2].item())


class _Catch:
    """An observer that keeps the g each layer's backward received."""

    def __init__(self):
        self.g = None

    def observe(self, g, selection, plan):
        self.g = g.clone()


def test_hidden_output_grads_equal_what_the_layers_receive_in_backward():
    torch.manual_seed(0)
    model = MLP(in_features=12, hidden=[9, 7], out_features=4)  # dense backward everywhere
    catches = [_Catch() for _ in model.hidden]
    for layer, c in zip(model.hidden, catches):
        layer.hooks.observers.append(c)
    x, y = torch.rand(5, 12), torch.tensor([0, 1, 2, 3, 1])
    F.cross_entropy(model(x), y).backward()
    for got, c in zip(hidden_output_grads(model, x, y), catches):
        torch.testing.assert_close(got, c.g)


def _one_step(k, optimizer, mode="per_example"):
    torch.manual_seed(3)
    model = MLP(in_features=10, hidden=[16, 12], out_features=3, k=k, mode=mode)
    probe = RowProbe(model.hidden[-1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1) if optimizer == "sgd" else torch.optim.Adam(model.parameters())
    x, y = torch.rand(6, 10), torch.tensor([0, 1, 2, 0, 1, 2])
    F.cross_entropy(model(x), y).backward()
    probe.before_step()
    grad = model.hidden[-1].weight.grad.clone()
    opt.step()
    probe.after_step()
    probe.detach()
    return probe, grad, model


def test_row_probe_dense_sgd_by_hand():
    probe, grad, model = _one_step(None, "sgd")
    h = probe.history
    assert h["agreement"] == [1.0] and h["coherence"] == h["coherence_full"]  # dense: the full gradient itself
    rows = (grad != 0).any(1)
    assert h["rows"] == [int(rows.sum())]
    assert h["weight_step"][0] == pytest.approx(0.1 * float(grad[grad != 0].abs().mean()), rel=1e-5)
    assert not model.hidden[-1].hooks.observers  # detached


def test_row_probe_top_k_rows_and_feeders():
    probe, grad, model = _one_step(2, "adam")
    layer = model.hidden[-1]
    rows = set((grad != 0).any(1).nonzero().flatten().tolist())
    assert probe.history["rows"] == [len(rows)]
    assert rows <= set(layer.stats.last_indices.flatten().tolist())
    assert 1.0 <= probe.history["feeders"][0] <= 6.0  # at most the 6 examples of the batch
    assert probe.history["weight_step"][0] == pytest.approx(1e-3, rel=1e-2)  # Adam's first step: lr per coordinate


def _tiny_data(n=240):
    g = torch.Generator().manual_seed(0)

    def split(m):
        return torch.rand(m, 784, generator=g), torch.randint(0, 10, (m,), generator=g)

    (tx, ty), (dx, dy), (sx, sy) = split(n), split(60), split(60)
    return MnistData(tx, ty, dx, dy, sx, sy)


@pytest.mark.parametrize("optimizer,mode", [("sgd", "per_example"), ("adam", "random")])
def test_probe_run_gives_train_s_numbers(optimizer, mode):
    data = _tiny_data()
    settings = dict(epochs=2, batch_size=40, train_limit=240, evals_per_epoch=3, seed=2)
    r = probe_run(ProbeConfig(k=(4, 4), mode=mode, optimizer=optimizer, hidden=32, probe_every=4, **settings), data)
    ref = train(TrainConfig(method="random" if mode == "random" else "meprop", k=4, hidden=32, optimizer=optimizer,
                            rows_every=0, **settings), data=data, progress=False)
    assert [e["dev_acc"] for e in r["history"]] == [e["dev_acc"] for e in ref["history"]]
    assert r["test_acc"] == ref["test_acc"]
    assert len(r["loss"]) == 12 and all(len(v) == 12 for v in r["probe"].values())
    assert r["activity"]["step"] == [0, 4, 8, 12] and len(r["activity"]["dead"][0]) == 2


def test_probe_config_rejects_bad_values():
    with pytest.raises(ValueError, match="mode='sideways'"):
        ProbeConfig(mode="sideways")
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        ProbeConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="watch=2"):
        ProbeConfig(watch=2)
    with pytest.raises(ValueError, match="batch_size=0"):
        ProbeConfig(batch_size=0)
    with pytest.raises(ValueError, match="one k per hidden layer"):
        ProbeConfig(k=())
