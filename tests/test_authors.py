"""The authors' C# settings (METHODS.md 1, 1b, 2): the heap's zero-filler rule in every kernel and realisation,
the Adam reset schedule, the inits, the summed loss and the ``authors=True`` preset."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from mesimp_lib import MLP, MePropLinear
from mesimp_lib import training as training_mod
from mesimp_lib.cli import build_parser
from mesimp_lib.meprop import heap_fillers, heap_hits
from mesimp_lib.mesimp import ActivityRecord, Simplifier, authors_reset_now
from mesimp_lib.tasks.mnist import init_weights
from mesimp_lib.training import AUTHORS, AUTHORS_MESIMP, TrainConfig, train

torch.set_num_threads(1)


def csharp_top(row, top):
    """A plain-Python copy of the authors' ``TopNHeap.GetAbsTop`` (lancopku/meProp, C#): the test oracle."""
    v = [abs(row[i]) for i in range(top)]
    ix = list(range(top))

    def shift_down(cur):
        while True:
            lc, rc = 2 * cur + 1, 2 * cur + 2
            if lc >= top:
                return
            nxt = lc if rc >= top else (rc if v[lc] > v[rc] else lc)
            if v[cur] > v[nxt]:
                v[cur], v[nxt] = v[nxt], v[cur]
                ix[cur], ix[nxt] = ix[nxt], ix[cur]
                cur = nxt
            else:
                return

    for i in range(top >> 1, -1, -1):
        shift_down(i)
    for i in range(top, len(row)):
        a = abs(row[i])
        if a > v[0]:
            v[0], ix[0] = a, i
            shift_down(0)
    return ix


def oracle_counts(rows, k):
    counts = [0] * len(rows[0])
    for row in rows:
        for i in csharp_top(row, k):
            counts[i] += 1
    return counts


def sparse_rows(n, width, seed, share_nonzero):
    rng = random.Random(seed)
    return [[rng.choice([-1, 1]) * rng.uniform(0.1, 2.0) if rng.random() < share_nonzero else 0.0
             for _ in range(width)] for _ in range(n)]


# ----------------------------------------------------------------------------- the filler rule


@pytest.mark.parametrize("row,k,fillers", [
    ([0, 0, 0, 0, 0, 1.0], 4, [1, 2, 3]),  # one non-zero after the seed evicts the root, index 0 (not index 3)
    ([0, 2.0, 0, 0, 3.0, 0, 5.0], 4, [2]),  # zeros 0, 3, 2 in preorder; the two late non-zeros evict 0 and 3
    ([0, 0, 0, 0, 0, 0, 0, 0], 5, [0, 1, 2, 3, 4]),  # an all-zero row keeps the seed
    ([1.0, 0, 0, 0, 0, 0, 0, 2.0, 0, 3.0], 6, [2, 4, 5]),  # preorder 0,1,3,4,2,5: zeros 1,3,4,2,5; 2 evicted
    ([1.0, 2.0, 3.0, 0, 0], 3, []),  # k non-zeros: no filler
])
def test_heap_fillers_on_hand_made_rows(row, k, fillers):
    """Rows with fewer than k non-zeros: the zeros the C# heap keeps, worked out by hand and by its copy."""
    expected = sorted(i for i in csharp_top(row, k) if row[i] == 0)
    assert expected == fillers
    got = heap_fillers(torch.tensor([row]) != 0, k)[0].nonzero().flatten().tolist()
    assert got == fillers


def test_heap_fillers_match_the_heap_on_random_rows():
    rng = random.Random(0)
    for trial in range(400):
        width = rng.randint(1, 40)
        k = rng.randint(1, width)
        rows = sparse_rows(3, width, trial, rng.random())
        got = heap_fillers(torch.tensor(rows) != 0, k)
        for row, g in zip(rows, got):
            assert g.nonzero().flatten().tolist() == sorted(i for i in csharp_top(row, k) if row[i] == 0), (row, k)


def test_heap_hits_equal_the_heap_record():
    """Whole rows, many with fewer and some with more than k non-zeros (distinct magnitudes, so no ties)."""
    for seed, share in ((1, 0.2), (2, 0.5), (3, 0.9)):
        rows = sparse_rows(20, 30, seed, share)
        assert heap_hits(torch.tensor(rows, dtype=torch.float64), 8).tolist() == oracle_counts(rows, 8)


def test_heap_fillers_bad_k():
    with pytest.raises(ValueError, match="k=0 must be in"):
        heap_fillers(torch.zeros(2, 5, dtype=torch.bool), 0)


def _kernels():
    from mesimp_lib.meprop import _require_kernels

    try:
        _require_kernels("fused")
    except Exception:  # noqa: BLE001 - the native kernels cannot be built here
        return ["torch"]
    return ["torch", "fused", "native"]


@pytest.mark.parametrize("kernel", _kernels())
def test_every_kernel_counts_the_heap_record(kernel):
    """count_zero_hits: the layer's selection counts equal the C# heap's record in every kernel."""
    rows = sparse_rows(12, 30, 7, 0.3)
    g = torch.tensor(rows, dtype=torch.float64)
    torch.manual_seed(0)
    kw = dict(weight_grad="dense") if kernel == "native" else {}
    layer = MePropLinear(6, 30, 8, "per_example", kernel=kernel, count_zero_hits=True, **kw).double()
    layer(torch.randn(12, 6, dtype=torch.float64)).backward(g)
    assert layer.stats.counts.tolist() == oracle_counts(rows, 8)


# ----------------------------------------------------------------------------- the meSimp record


def _train_pair(realisation, count_zero_hits=True, steps=4):
    torch.manual_seed(0)
    model = MLP(in_features=12, hidden=[24, 16], out_features=5, k=10).double()
    simp = Simplifier(model, prune_rate=0.5, realisation=realisation, count_zero_hits=count_zero_hits)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    hits = []
    for r in range(4):
        for _ in range(steps):
            xb = torch.randn(6, 12, generator=gen, dtype=torch.float64)
            yb = torch.randint(0, 5, (6,), generator=gen)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        hits.append([_by_original_unit(simp, i) for i in range(2)])
        simp.prune(opt)
    return simp, hits


def _by_original_unit(simp, i):
    rec = simp.records[i]
    if simp.realisation == "mask":
        return {u: int(h) for u, h in enumerate(rec.hits.tolist()) if simp.alive[i][u]}
    return {int(u): int(h) for u, h in zip(simp.unit_ids[i].tolist(), rec.hits.tolist())}


def test_record_follows_the_heap_in_mask_and_physical_realisations():
    """The same hits per original unit in both realisations, also after layers shrank below k (the C# heap
    still runs over the original positions, so zeros of index < k keep counting)."""
    sm, hm = _train_pair("mask")
    sp, hp = _train_pair("physical")
    assert hm == hp
    assert sm.widths == sp.widths and min(sp.widths) < 10  # a layer got narrower than k
    assert sum(sum(h.values()) for h in hp[-1]) > 0


def test_record_hits_equal_the_heap_on_given_rows():
    rows = sparse_rows(9, 20, 4, 0.25)
    rec = ActivityRecord(20, count_zero_hits=True, k=6)
    layer = MePropLinear(3, 20, 6, "per_example")
    layer.hooks.observers.append(rec)
    layer(torch.randn(9, 3)).backward(torch.tensor(rows))
    assert rec.hits.tolist() == oracle_counts(rows, 6) and rec.seen == 9
    off = ActivityRecord(20, count_zero_hits=False, k=6)  # the default: only non-zero selected entries count
    layer.hooks.observers[:] = [off]
    layer(torch.randn(9, 3)).backward(torch.tensor(rows))
    expected = [0] * 20
    for row in rows:
        for i in csharp_top(row, 6):
            expected[i] += row[i] != 0
    assert off.hits.tolist() == expected


# ----------------------------------------------------------------------------- the reset schedule


def test_authors_reset_schedule_and_step_count(monkeypatch):
    """reset="authors": moments zeroed after each part of the last epoch of every cycle, the step count kept."""
    seen = []
    original = training_mod.reset_optimizer_state

    def spy(opt):
        seen.append(max(int(s["step"]) for s in opt.state.values()))
        original(opt)
        assert all(float(s["exp_avg"].abs().sum()) == 0 and float(s["exp_avg_sq"].abs().sum()) == 0
                   for s in opt.state.values())
        assert max(int(s["step"]) for s in opt.state.values()) == seen[-1]  # kept

    monkeypatch.setattr(training_mod, "reset_optimizer_state", spy)
    cfg = TrainConfig(method="mesimp", k=10, hidden=32, epochs=4, cycle_epochs=2, prunes_per_epoch=2, batch_size=50,
                      train_limit=400, reset="authors", rows_every=0, evals_per_epoch=1)
    r = train(cfg, progress=False)
    # 8 steps per epoch, parts end after steps 4 and 8; epochs 1 and 3 are the last of their cycles
    assert r["optimizer_resets"] == [12, 16, 28, 32] == seen
    assert [authors_reset_now(e, 5) for e in range(10)] == [False] * 4 + [True] + [False] * 4 + [True]


# ----------------------------------------------------------------------------- init and loss


def test_init_standard_deviations():
    torch.manual_seed(0)
    model = MLP(hidden=500).requires_grad_(False)
    init_weights(model, "csharp")
    w = model.hidden[0].weight
    assert float(w.std()) == pytest.approx(math.sqrt(6 / (784 + 500)), rel=0.01)
    assert float(w.mean()) == pytest.approx(0, abs=0.002)
    assert float(model.output.weight.std()) == pytest.approx(math.sqrt(6 / 510), rel=0.03)
    assert all(float(layer.bias.abs().max()) == 0 for layer in model.meprop_layers())
    init_weights(model, "pytorch_old")
    bound = 1 / math.sqrt(500)
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert float(w.abs().max()) <= bound and float(model.hidden[0].bias.abs().max()) <= bound
    assert float(model.hidden[0].bias.std()) == pytest.approx(bound / math.sqrt(3), rel=0.15)
    assert float(model.output.weight.abs().max()) <= 1 / math.sqrt(10)
    with pytest.raises(ValueError, match="init='glorot'.*default, csharp, pytorch_old"):
        init_weights(model, "glorot")


def test_sum_loss_is_mean_loss_times_batch():
    """loss_reduction="sum" is the mean loss times the batch: with SGD at lr / B it trains the same model."""
    quick = dict(method="meprop", k=8, hidden=32, epochs=1, train_limit=200, batch_size=20, evals_per_epoch=2,
                 optimizer="sgd", rows_every=0)
    mean = train(TrainConfig(lr=0.1, **quick), progress=False)
    summed = train(TrainConfig(lr=0.1 / 20, loss_reduction="sum", **quick), progress=False)
    for a, b in zip(mean["history"], summed["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)  # reported as a mean
        assert b["dev_acc"] == pytest.approx(a["dev_acc"], abs=2e-4)


# ----------------------------------------------------------------------------- the preset


def test_authors_preset_values_and_round_trip():
    c = TrainConfig(method="mesimp", authors=True)
    for name, value in {**AUTHORS, **AUTHORS_MESIMP}.items():
        assert getattr(c, name) == value, name
    assert "--authors" in str(c) and "--reset authors" in str(c) and "--count-zero-hits" in str(c)
    assert TrainConfig(**{f: getattr(c, f) for f in c.__dataclass_fields__}) == c  # a stored config stays equal
    args = build_parser().parse_args(["train", "--method", "mesimp", "--authors"])
    assert TrainConfig(**{f: getattr(args, f) for f in c.__dataclass_fields__}) == c
    p = TrainConfig(method="meprop", authors=True)
    assert (p.batch_size, p.k, p.reset, p.count_zero_hits) == (10, 20, "fresh", False)  # meSimp-only parts unset
    assert (p.init, p.loss_reduction, p.grad_clip, p.evals_per_epoch) == ("csharp", "sum", 5.0, 8)


def test_authors_preset_explicit_values_win():
    c = TrainConfig(method="mesimp", authors=True, batch_size=50, k=80, init="pytorch_old", grad_clip=1.0)
    assert (c.batch_size, c.k, c.init, c.grad_clip) == (50, 80, "pytorch_old", 1.0)
    assert c.loss_reduction == "sum" and c.reset == "authors"
    g = TrainConfig(authors=True, optimizer="adagrad")
    assert g.lr is None and g.learning_rate == 1e-2  # the authors' lr is Adam's


@pytest.mark.parametrize("kw,match", [
    (dict(task="pos", authors=True), "authors=True is the authors' MNIST configuration; task='pos'"),
    (dict(authors="yes"), "authors='yes'"),
    (dict(init="glorot"), "init='glorot'.*default, csharp, pytorch_old"),
    (dict(loss_reduction="none"), "loss_reduction='none'.*mean, sum"),
    (dict(reset="never"), "reset='never'.*fresh, moments, authors"),
    (dict(task="pos", loss_reduction="sum"), "task='pos'.*mnist"),
])
def test_authors_option_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_lstm_record_follows_the_heap_in_mask_and_physical_realisations():
    """The LSTM (no C# exists: the MLP's rule per gate, mapped onto cells) counts alike in both realisations, also
    once a layer is down to k cells (then the physical layer runs dense). Gate gradients are rarely exactly 0
    (sigmoid / tanh derivatives), so here the heap's fillers come only from removed cells under the mask."""
    from mesimp_lib.lstm import LSTMSimplifier
    from tests.test_lstm import Tiny, data, train_steps

    torch.manual_seed(0)
    a, b = Tiny(k=4), Tiny(k=4)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=1e-2), torch.optim.Adam(b.parameters(), lr=1e-2)
    sa = LSTMSimplifier([a.fwd, a.bwd], a.output, prune_rate=0.7, realisation="mask", count_zero_hits=True)
    sb = LSTMSimplifier([b.fwd, b.bwd], b.output, prune_rate=0.7, realisation="physical", count_zero_hits=True)
    batches = data(12)
    for r in range(4):
        chunk = batches[3 * r:3 * r + 3]
        train_steps(a, opt_a, chunk)
        train_steps(b, opt_b, chunk)
        for d in range(2):  # hits per original cell (removed cells are not compared)
            assert sa.records[d].hits[sb.unit_ids[d]].tolist() == sb.records[d].hits.tolist()
        sa.prune(opt_a)
        sb.prune(opt_b)
        assert sa.widths == sb.widths
    assert min(sb.widths) <= 4 < max(sb.widths) < 10


def test_adam_step_after_a_reset_that_keeps_the_step_count():
    """The README's diagnosis of the authors' reset: with t kept, the first step after zeroing m and v moves every
    coordinate with a gradient by lr * 0.1 / sqrt(0.001 / (1 - 0.999^t)) (3.16 lr for a large t), whatever |g|."""
    from mesimp_lib.mesimp import reset_optimizer_state

    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = torch.optim.Adam([p], lr=1e-3)
    for _ in range(3):
        p.grad = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
        opt.step()
    opt.state[p]["step"].fill_(10_000)  # as late in a run
    reset_optimizer_state(opt)
    before = p.detach().clone()
    p.grad = torch.tensor([1e-3, -50.0, 2.0, 0.0], dtype=torch.float64)
    opt.step()
    moved = (p.detach() - before).tolist()
    expected = 1e-3 * 0.1 / math.sqrt(0.001 / (1 - 0.999**10_001))
    assert expected == pytest.approx(3.16e-3, rel=2e-3)
    assert moved[:3] == pytest.approx([-expected, expected, -expected], rel=1e-3) and moved[3] == 0  # eps: 3e-4 at 1e-3
