"""One Simplifier over per-layer units: the LSTM's simplifier is the same loop, the alive mask lives in the
layer only, the LSTM record keeps its own count_zero_hits (creating a simplifier changes no layer)."""

import pytest
import torch

from mesimp_lib.lstm import LSTMSimplifier
from mesimp_lib.mesimp import Simplifier, mlp_units
from mesimp_lib.units import LinearUnits, LSTMCells
from tests.test_lstm import Tiny, data, train_steps
from tests.test_mesimp import batches, make, step

torch.set_num_threads(1)


def test_lstm_simplifier_is_the_simplifier_over_cells():
    m = Tiny()
    s = LSTMSimplifier([m.fwd, m.bwd], m.output, prune_rate=0.5)
    assert isinstance(s, Simplifier) and [type(u) for u in s.units] == [LSTMCells, LSTMCells]
    assert repr(s).startswith("LSTMSimplifier(prune_rate=0.5, realisation=physical, widths=[10, 10]")
    s.detach()
    assert m.fwd.records == [] and m.bwd.records == []


def test_units_list_equals_the_model_form():
    """Simplifier(model) is Simplifier(mlp_units(model)): same events, same widths, same parameters."""
    a, b = make(), make()
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=1e-2), torch.optim.Adam(b.parameters(), lr=1e-2)
    sa = Simplifier(a, prune_rate=0.3)
    sb = Simplifier(mlp_units(b), prune_rate=0.3)
    assert [type(u) for u in sb.units] == [LinearUnits, LinearUnits]
    for r in range(2):
        for xb, yb in batches(3, seed=r):
            step(a, opt_a, xb, yb)
            step(b, opt_b, xb, yb)
        assert sa.prune(opt_a) == sb.prune(opt_b)
    assert sa.widths == sb.widths and sum(sa.widths) < 40
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_alive_is_read_from_the_layer_mask():
    """Mask realisation: the layer's gradient mask is the only place that says which units are in."""
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    simp = Simplifier(model, prune_rate=0.3, realisation="mask")
    for xb, yb in batches(3):
        step(model, opt, xb, yb)
    simp.prune(opt)
    for layer, alive in zip(model.hidden, simp.alive):
        assert layer.hooks.grad_mask is not None and torch.equal(alive, layer.hooks.grad_mask != 0)
    assert simp.widths == [int(layer.hooks.grad_mask.sum()) for layer in model.hidden]
    m = Tiny()
    s = LSTMSimplifier([m.fwd, m.bwd], m.output, realisation="mask")
    m.fwd.cell_mask = (torch.arange(10) % 2).double()  # a layer masked elsewhere: the simplifier sees it
    assert s.widths == [5, 10] and s.alive[0].tolist() == [j % 2 == 1 for j in range(10)]


@pytest.mark.parametrize("layer_flag", [False, True])
def test_lstm_record_has_its_own_count_zero_hits(layer_flag):
    """The record counts with the simplifier's count_zero_hits whatever the layers' flag (which only their
    stats use); creating the simplifier leaves the layers as they were built."""
    torch.manual_seed(0)
    a, b = Tiny(k=4), Tiny(k=4)
    b.load_state_dict(a.state_dict())
    for layer in (b.fwd, b.bwd):
        layer.count_zero_hits = layer_flag
    sa = LSTMSimplifier([a.fwd, a.bwd], a.output, prune_rate=0.7, realisation="mask", count_zero_hits=True)
    sb = LSTMSimplifier([b.fwd, b.bwd], b.output, prune_rate=0.7, realisation="mask", count_zero_hits=True)
    assert (a.fwd.count_zero_hits, b.fwd.count_zero_hits) == (False, layer_flag)  # not changed
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=1e-2), torch.optim.Adam(b.parameters(), lr=1e-2)
    batches_ = data(6)
    for r in range(2):
        train_steps(a, opt_a, batches_[3 * r:3 * r + 3])
        train_steps(b, opt_b, batches_[3 * r:3 * r + 3])
        assert [rec.hits.tolist() for rec in sa.records] == [rec.hits.tolist() for rec in sb.records]
        assert sa.prune(opt_a) == sb.prune(opt_b)
    assert min(sa.widths) < 10  # the heap's fillers of removed cells were counted alike
