"""The notebooks' self-checks (mesimp_lib.exercises.nb00 ... nb04): right answers pass, wrong ones fail
with a readable line, and none raises on a wrong answer."""

import pytest
import torch

from mesimp_lib import MLP, MePropLinear
from mesimp_lib.exercises import nb00, nb01, nb02, nb03, nb04
from mesimp_lib.meprop import select_per_example


def _tiny_layer(k, mode="per_example"):
    torch.manual_seed(0)
    layer = MePropLinear(in_features=4, out_features=8, k=k, mode=mode)
    x = torch.randn(3, 4, requires_grad=True)
    g = torch.randn(3, 8)
    layer(x).backward(g)
    return layer, x, g


@pytest.mark.parametrize("k", [1, 2, 7, 8, 9, 100])
def test_nb00_exercise_1_works_at_every_k(k):
    fb = nb00.check_exercise_1(*_tiny_layer(k))
    assert bool(fb) == (k >= 8)
    assert "checkpoint holds" in str(fb)  # the formulas hold at every k


def test_nb00_exercise_1_unified_and_before_backward():
    assert nb00.check_exercise_1(*_tiny_layer(8, "unified"))
    layer = MePropLinear(4, 8, k=8)
    fb = nb00.check_exercise_1(layer, torch.randn(3, 4), torch.randn(3, 8))
    assert not fb and "run the cell first" in str(fb)


def _result(method="meprop", k=20, mode="per_example", optimizer="sgd", acc=0.5, rescale=False, **extra):
    return {"config": {"method": method, "k": k, "mode": mode, "optimizer": optimizer, "rescale": rescale,
                       "batch_size": extra.pop("batch_size", 50)}, "test_acc": acc, **extra}


def test_nb00_exercise_2():
    results = {"dense": _result("dense", acc=0.9), "k20": _result(acc=0.8), "k100": _result(k=100, acc=0.88)}
    assert nb00.check_exercise_2(results, closer=True)
    assert not nb00.check_exercise_2(results, closer=False)
    assert not nb00.check_exercise_2({"dense": _result("dense")}, closer=True)  # no k=100 run: says so
    assert not nb00.check_exercise_2(results, closer=True, optimizer="adam")


def test_nb01_exercises():
    g = torch.tensor([[0.0, -2.0, 0.0, 3.0, -1.0, 0.0], [0.0, -2.0, 0.0, 0.0, 0.0, 0.0]])
    assert nb01.check_exercise_1(g, g.clone(), 6)
    assert not nb01.check_exercise_1(g, g * (g.abs() > 1.5), 2)
    assert nb01.check_exercise_2(7_840_000, 313_600)
    assert not nb01.check_exercise_2(3_920_000, 313_600)
    G = torch.randn(5, 12)
    rows = len(set(select_per_example(G, 1).flatten().tolist()))
    assert nb01.check_exercise_3(G, rows, 1)
    assert not nb01.check_exercise_3(G, rows, 5)


def _rows_result(with_grad, changed, **cfg):
    return _result(rows={"with_grad": with_grad, "changed": changed}, **cfg)


def test_nb02_exercises():
    assert nb02.check_exercise_1(_rows_result([0.02, 0.02], [0.5, 0.5], k=10, mode="unified"))
    assert not nb02.check_exercise_1(_rows_result([0.2, 0.3], [0.5, 0.5], k=10, mode="per_example"))
    assert nb02.check_exercise_2(_rows_result([0.25, 0.3], [0.9, 0.9], optimizer="adam"))
    assert not nb02.check_exercise_2(_rows_result([0.25, 0.3], [0.25, 0.3], optimizer="adagrad"))
    b10 = _rows_result([0.1, 0.1], [0.1, 0.1], batch_size=10)
    b50 = _rows_result([0.3, 0.3], [0.3, 0.3], batch_size=50)
    assert nb02.check_exercise_3(b10, b50, "down") and not nb02.check_exercise_3(b10, b50, "up")
    with pytest.raises(ValueError, match="rows_every"):
        nb02.check_exercise_1(_rows_result([], [], k=10, mode="unified"))


def test_nb03_exercises():
    results = {"t20": _result(k=20, acc=0.83), "r20": _result("random", k=20, acc=0.69),
               "t100": _result(k=100, acc=0.89), "r100": _result("random", k=100, acc=0.85)}
    assert nb03.check_exercise_1(results, shrinks=True)
    assert not nb03.check_exercise_1(results, shrinks=False)
    assert not nb03.check_exercise_1({"t20": results["t20"]}, shrinks=True)
    assert nb03.check_exercise_2(0.04) and not nb03.check_exercise_2(25)
    n20 = sum(p.numel() for p in MLP(hidden=20).parameters())
    n500 = sum(p.numel() for p in MLP(hidden=500).parameters())
    assert nb03.check_exercise_3(n20, n500) and not nb03.check_exercise_3(16_320, n500)


def test_nb04_exercises():
    torch.manual_seed(3)
    model = MLP(in_features=8, hidden=[12], layers=1, out_features=3, k=4, dropout=0.0)
    torch.nn.functional.cross_entropy(model(torch.randn(2, 8)), torch.tensor([0, 2])).backward()
    total = int(model.hidden[0].stats.counts.sum())
    assert nb04.check_exercise_1(model, total) and not nb04.check_exercise_1(model, total + 1)
    dropped = MLP(in_features=8, hidden=[12], layers=1, out_features=3, k=4, dropout=0.5)
    torch.nn.functional.cross_entropy(dropped(torch.randn(2, 8)), torch.tensor([0, 2])).backward()
    assert not nb04.check_exercise_1(dropped, int(dropped.hidden[0].stats.counts.sum()))
    fb = nb04.check_exercise_2(0.2, meprop_helps=False)  # the stored data/results tables
    assert "dropout 0.2 has the best mean dev accuracy" in str(fb)
    assert bool(fb) != bool(nb04.check_exercise_2(0.2, meprop_helps=True))
    assert not nb04.check_exercise_2(0.5, meprop_helps=False)


def test_unanswered_checks_ask_and_do_not_reveal():
    results = {"dense": _result("dense", acc=0.9), "k20": _result(acc=0.8), "k100": _result(k=100, acc=0.88)}
    fb = nb00.check_exercise_2(results, closer=None)
    assert not fb and "set closer" in str(fb) and "apart" not in str(fb)
    assert "set best_rate" in str(nb04.check_exercise_2(None, None))
    assert "set meprop_helps" in str(nb04.check_exercise_2(0.2, None))


def test_wrong_answers_do_not_reveal_the_answer():
    torch.manual_seed(3)
    model = MLP(in_features=8, hidden=[12], layers=1, out_features=3, k=4, dropout=0.0)
    torch.nn.functional.cross_entropy(model(torch.randn(2, 8)), torch.tensor([0, 2])).backward()
    total = int(model.hidden[0].stats.counts.sum())
    fb = nb04.check_exercise_1(model, total + 1)
    assert not fb and f"({total})" not in str(fb) and f"{total} selections" not in str(fb)
    fb = nb04.check_exercise_2(0.5, meprop_helps=False)  # a wrong rate: the meProp rows (named by rate) stay hidden
    assert not fb and "p0.2" not in str(fb) and "0.2" not in str(fb)
    fb = nb03.check_exercise_2(25)
    assert not fb and "k/n" not in str(fb) and "0.04" not in str(fb)


def test_accuracy_gaps_are_in_points():
    results = {"dense": _result("dense", acc=0.9), "k20": _result(acc=0.8), "k100": _result(k=100, acc=0.88)}
    assert "2.00 vs 10.00 points apart" in str(nb00.check_exercise_2(results, closer=True))
    results = {"t20": _result(k=20, acc=0.83), "r20": _result("random", k=20, acc=0.69),
               "t100": _result(k=100, acc=0.89), "r100": _result("random", k=100, acc=0.85)}
    assert "+14.00 points at k=20 and +4.00 points at k=100" in str(nb03.check_exercise_1(results, shrinks=True))


@pytest.mark.parametrize("check,args,asks", [
    (nb01.check_exercise_2, (None, None), "set dense_macs"),
    (nb01.check_exercise_3, (torch.randn(5, 12), 3, None), "set unified_rows"),
    (nb02.check_exercise_1, (None,), "set unified_run"),
    (nb02.check_exercise_2, (None,), "set adam_run"),
    (nb02.check_exercise_3, (None, {}, None), "set batch10_run"),
    (nb03.check_exercise_2, (None,), "set scale"),
    (nb03.check_exercise_3, (None, None), "set params_h20"),
])
def test_every_check_asks_for_a_missing_answer(check, args, asks):
    fb = check(*args)
    assert not fb and asks in str(fb)


def test_nb10_exercises():
    from mesimp_lib.diagnostics import sign_coherence
    from mesimp_lib.exercises import nb10

    torch.manual_seed(0)
    g = torch.randn(40, 30)
    idx = g.abs().topk(3, dim=1).indices
    g_k = torch.zeros_like(g).scatter_(1, idx, g.gather(1, idx))
    h = torch.rand(40, 7)
    rows = (g_k != 0).sum(0) >= 2
    want = float(sign_coherence(g_k[:, rows].T @ h).nanmean())
    assert nb10.check_exercise_1(g_k, h, want) and not nb10.check_exercise_1(g_k, h, want - 0.01)
    assert "set coherence" in str(nb10.check_exercise_1(g_k, h, None))
    # two Adam steps by hand: m = 0.091, v = 0.000999 + 1e-7 (bias-corrected by 0.19 and 0.001999)
    m_hat, v_hat = (0.9 * 0.1 + 0.1 * 0.01) / 0.19, (0.999 * 0.001 + 0.001 * 1e-4) / (1 - 0.999 ** 2)
    ratio = m_hat / (v_hat ** 0.5 + 1e-8)
    assert nb10.check_exercise_2(ratio) and not nb10.check_exercise_2(1.0)
