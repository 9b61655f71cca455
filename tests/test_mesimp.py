"""meSimp: the record, the prune rule, mask == physical, optimizer slicing, checkpoints, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mesimp_lib import MLP
from mesimp_lib.checkpoint import load_model, save_model
from mesimp_lib.mesimp import ActivityRecord, Simplifier, cycle_phase, reset_optimizer_state
from mesimp_lib.training import TrainConfig, train

torch.set_num_threads(1)


def make(seed=0, hidden=(24, 16), k=4, mode="per_example"):
    torch.manual_seed(seed)
    return MLP(in_features=12, hidden=list(hidden), out_features=5, k=k, mode=mode).double()


def batches(n, seed=1, size=6):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 12, generator=gen, dtype=torch.float64), torch.randint(0, 5, (size,), generator=gen))
            for _ in range(n)]


def step(model, opt, xb, yb):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(xb), yb).backward()
    opt.step()


# ----------------------------------------------------------------------------- the record and rule


def test_threshold_floors():
    rec = ActivityRecord(4)
    rec.hits = torch.tensor([0, 1, 2, 3])
    rec.seen = 25
    assert rec.threshold(0.1) == math.floor(2.5) == 2
    keep, held = rec.keep_mask(0.1)
    assert keep.tolist() == [False, False, True, True] and not held
    rec.seen = 29  # 2.9 floors to 2, not 3
    assert rec.keep_mask(0.1)[0].tolist() == [False, False, True, True]
    rec.seen = 30
    assert rec.keep_mask(0.1)[0].tolist() == [False, False, False, True]


def test_record_counts_per_example_and_clears_only_at_prune():
    model = make()
    simp = Simplifier(model, prune_rate=0.0)
    data = batches(3)
    opt = torch.optim.Adam(model.parameters())
    for i, (xb, yb) in enumerate(data):
        step(model, opt, xb, yb)
        assert simp.records[0].seen == 6 * (i + 1)  # accumulates across steps
    hits_before = simp.records[0].hits.sum().item()
    assert 0 < hits_before <= 3 * 6 * 4  # at most k per example
    simp.prune(opt)
    assert simp.records[0].seen == 0 and simp.records[0].hits.sum().item() == 0


def test_unified_mode_record_options():
    torch.manual_seed(0)
    x = torch.randn(5, 12, dtype=torch.float64)
    for record, expect_per_example in (("per_example", True), ("unified", False)):
        model = make(mode="unified")
        simp = Simplifier(model, record=record)
        F.cross_entropy(model(x), torch.arange(5)).backward()
        hits = simp.records[0].hits
        if expect_per_example:
            assert hits.sum() <= 5 * 4  # each example counts its own top-4
        else:
            assert set(hits.nonzero().flatten().tolist()) <= set(model.hidden[0].stats.last_indices.tolist())


def test_min_units_kept_and_reported():
    model = make()
    simp = Simplifier(model, prune_rate=1.0, min_units=3)
    opt = torch.optim.Adam(model.parameters())
    for xb, yb in batches(2):
        step(model, opt, xb, yb)
    event = simp.prune(opt)
    assert event["widths"] == [3, 3] and event["kept_minimum"] == [True, True]
    assert model.output.out_features == 5  # the output layer is never pruned


def test_removed_units_never_return():
    for realisation in ("mask", "physical"):
        model = make()
        simp = Simplifier(model, prune_rate=0.3, realisation=realisation)
        opt = torch.optim.Adam(model.parameters())
        alive_ids = [set(range(24)), set(range(16))]
        for r in range(4):
            for xb, yb in batches(3, seed=r):
                step(model, opt, xb, yb)
            simp.prune(opt)
            if realisation == "physical":
                now = [set(ids.tolist()) for ids in simp.unit_ids]
            else:
                now = [set(a.nonzero().flatten().tolist()) for a in simp.alive]
            assert all(n <= a for n, a in zip(now, alive_ids))
            alive_ids = now
        assert simp.widths == [len(a) for a in alive_ids]


# ----------------------------------------------------------------------------- mask == physical


def test_mask_and_physical_identical_outputs_and_next_steps():
    masked, physical = make(), make()
    sm = Simplifier(masked, prune_rate=0.2, realisation="mask")
    sp = Simplifier(physical, prune_rate=0.2, realisation="physical")
    om = torch.optim.Adam(masked.parameters(), lr=1e-2)
    op = torch.optim.Adam(physical.parameters(), lr=1e-2)
    x_eval = torch.randn(7, 12, dtype=torch.float64)
    for r in range(3):
        for xb, yb in batches(4, seed=10 + r):
            step(masked, om, xb, yb)
            step(physical, op, xb, yb)
        em, ep = sm.prune(om), sp.prune(op)
        assert em["widths"] == ep["widths"] and em["removed"] == ep["removed"]
        assert physical.widths == ep["widths"] and masked.widths == [24, 16]  # masked keeps shapes
        torch.testing.assert_close(masked(x_eval), physical(x_eval), rtol=1e-12, atol=1e-12)
    assert sum(ep["widths"]) < 40  # something was really removed
    # one more training step after shrinking: the live parameters move identically
    xb, yb = batches(1, seed=99)[0]
    step(masked, om, xb, yb)
    step(physical, op, xb, yb)
    for l, (lm, lp) in enumerate(zip(masked.hidden, physical.hidden)):
        ids = sp.unit_ids[l]
        torch.testing.assert_close(lm.weight[ids][:, _cols(sp, l)], lp.weight, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(lm.bias[ids], lp.bias, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(masked.output.weight[:, sp.unit_ids[-1]], physical.output.weight, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(masked(x_eval), physical(x_eval), rtol=1e-10, atol=1e-12)


def _cols(simp, layer_index):
    return slice(None) if layer_index == 0 else simp.unit_ids[layer_index - 1]


def test_adam_state_is_sliced_with_the_parameters():
    model = make()
    simp = Simplifier(model, prune_rate=0.3)
    opt = torch.optim.Adam(model.parameters())
    for xb, yb in batches(4):
        step(model, opt, xb, yb)
    w_old, w2_old = model.hidden[0].weight, model.hidden[1].weight
    m_old = opt.state[w_old]["exp_avg"].clone()
    m2_old = opt.state[w2_old]["exp_avg_sq"].clone()
    step_count = opt.state[w_old]["step"].clone()
    simp.prune(opt)
    ids = simp.unit_ids[0]
    w_new = model.hidden[0].weight
    assert w_new.shape[0] == len(ids) < 24
    torch.testing.assert_close(opt.state[w_new]["exp_avg"], m_old[ids])
    assert torch.equal(opt.state[w_new]["step"], step_count)
    # the next layer's input columns and their moments follow the removed rows
    w2_new = model.hidden[1].weight
    torch.testing.assert_close(opt.state[w2_new]["exp_avg_sq"], m2_old[simp.unit_ids[1]][:, ids])
    in_opt = {id(q) for g in opt.param_groups for q in g["params"]}
    assert id(w_new) in in_opt and id(w_old) not in in_opt
    assert {id(p) for p in opt.state} == {id(p) for p in model.parameters()}


def test_reset_moments_keeps_step():
    model = make()
    opt = torch.optim.Adam(model.parameters())
    for xb, yb in batches(2):
        step(model, opt, xb, yb)
    reset_optimizer_state(opt)
    for st in opt.state.values():
        assert float(st["exp_avg"].abs().sum()) == 0 and float(st["step"]) == 2


# ----------------------------------------------------------------------------- checkpoints and export


def test_save_load_export_round_trip(tmp_path):
    model = make()
    simp = Simplifier(model, prune_rate=0.3)
    opt = torch.optim.Adam(model.parameters())
    for xb, yb in batches(4):
        step(model, opt, xb, yb)
    simp.prune(opt)
    model.float()
    path = save_model(model, tmp_path / "small.pt", extra={"note": "test"})
    loaded = load_model(path)
    assert loaded.widths == model.widths
    x = torch.randn(3, 12)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x))
    seq = model.to_sequential()
    assert all(type(m).__module__.startswith("torch.nn") for m in seq)
    torch.testing.assert_close(seq(x), model(x))
    with pytest.raises(ValueError, match=r"does not fit this model.*hidden\.0\.weight"):
        load_model(path, MLP(in_features=12, hidden=[24, 16], out_features=5))
    bad = tmp_path / "bad.pt"
    torch.save({"x": 1}, bad)
    with pytest.raises(ValueError, match="not a mesimp_lib MLP checkpoint"):
        load_model(bad)


# ----------------------------------------------------------------------------- guard rails and schedule


@pytest.mark.parametrize("rate", [-0.1, 1.5, "0.1", True])
def test_bad_prune_rate(rate):
    with pytest.raises(ValueError, match="prune_rate"):
        Simplifier(make(), prune_rate=rate)
    with pytest.raises(ValueError, match="prune_rate"):
        TrainConfig(method="mesimp", prune_rate=rate)


@pytest.mark.parametrize(
    "kw,match",
    [(dict(cycle_epochs=0), "cycle_epochs=0"), (dict(prunes_per_epoch=0), "prunes_per_epoch=0"),
     (dict(prunes_per_epoch=-2), "prunes_per_epoch=-2"), (dict(min_units=0), "min_units=0"),
     (dict(realisation="delete"), "realisation='delete'"), (dict(reset="zero"), "reset='zero'"),
     (dict(record="batch"), "record='batch'")],
)
def test_bad_schedule_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(method="mesimp", **kw)


def test_bad_simplifier_arguments():
    with pytest.raises(ValueError, match="min_units=0"):
        Simplifier(make(), min_units=0)
    with pytest.raises(ValueError, match="realisation='x'"):
        Simplifier(make(), realisation="x")
    with pytest.raises(ValueError, match="cycle_epochs=0"):
        cycle_phase(3, 0)


def test_cycle_phase():
    assert [cycle_phase(e, 5)[1] for e in range(12)] == [True] * 5 + [False] * 5 + [True] * 2
    assert cycle_phase(7, 5) == (1, False)


def test_trainer_prunes_only_in_even_cycles():
    cfg = TrainConfig(method="mesimp", k=10, hidden=64, epochs=3, cycle_epochs=1, prunes_per_epoch=2,
                      batch_size=20, train_limit=400, prune_rate=0.1, rows_every=0, evals_per_epoch=1)
    r = train(cfg, progress=False)
    events = r["widths_history"][1:]
    assert [e["epoch"] for e in events] == [0.5, 1.0, 2.5, 3.0]  # epochs 0 and 2 prune, epoch 1 does not
    assert r["final_widths"] == events[-1]["widths"] and r["final_widths"][0] < 64
    assert r["params"]["final"] < r["params"]["start"]
    assert all(e["dev_acc"] is not None for e in events)
