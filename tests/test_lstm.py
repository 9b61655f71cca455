"""MePropLSTM: equals nn.LSTM when dense, equals a masked-dense BPTT with top-k per gate,
padding never leaks; LSTMSimplifier: mask == physical, removed cells stay removed."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mesimp_lib.lstm import LSTMSimplifier, MePropLSTM, step_backward

torch.set_num_threads(1)

B, T, I, H = 4, 6, 5, 7
LENGTHS = torch.tensor([3, 6, 1, 4])


def reference_lstm(seed=0):
    torch.manual_seed(seed)
    return nn.LSTM(I, H, batch_first=True, bidirectional=True).double()


def inputs(seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, I, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(B, T, 2 * H, generator=gen, dtype=torch.float64)  # d loss / d output
    return x, w


def torch_bilstm(ref, x, lengths):
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = ref(packed)
    return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


@pytest.mark.parametrize("k", [None, 0, H, 100, 1.0])
def test_dense_matches_torch_lstm(k):
    ref = reference_lstm()
    x, w = inputs()
    out = torch_bilstm(ref, x, LENGTHS)
    (out * w).sum().backward()
    gx = x.grad.clone()
    x.grad = None
    fwd, bwd = MePropLSTM.from_lstm(ref, False, k), MePropLSTM.from_lstm(ref, True, k)
    mine = torch.cat([fwd(x, LENGTHS), bwd(x, LENGTHS)], dim=2)
    torch.testing.assert_close(mine, out)
    (mine * w).sum().backward()
    torch.testing.assert_close(x.grad, gx)
    for layer, suffix in ((fwd, "_l0"), (bwd, "_l0_reverse")):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            torch.testing.assert_close(getattr(layer, name).grad, getattr(ref, name + suffix).grad)
    assert fwd.stats.macs_ratio == 1.0 and fwd.stats.mean_rows_touched_frac == 1.0


def test_same_seed_same_init_as_torch():
    torch.manual_seed(3)
    ref = nn.LSTM(I, H)
    torch.manual_seed(3)
    mine = MePropLSTM(I, H)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        assert torch.equal(getattr(mine, name), getattr(ref, name + "_l0"))


def topk_per_gate(g, k):
    """Keep the k largest |g| of each gate block per row (the oracle's top-k)."""
    n = g.shape[0]
    v = g.reshape(n, 4, -1)
    idx = v.abs().topk(k, dim=2).indices
    return torch.zeros_like(v).scatter_(2, idx, v.gather(2, idx)).reshape(n, -1)


def reference_bptt(layer, x, lengths, k):
    """A plain per-sentence loop; a hook on the product part of each gate pre-activation
    keeps the top-k per gate (the bias, added after the hook, gets the full gradient)."""
    w_ih, w_hh, b = layer.weight_ih, layer.weight_hh, layer.bias_ih + layer.bias_hh
    out = torch.zeros(x.shape[0], x.shape[1], layer.hidden_size, dtype=x.dtype)
    rows = []
    for s in range(x.shape[0]):
        n = int(lengths[s])
        ts = range(n - 1, -1, -1) if layer.reverse else range(n)
        h = c = torch.zeros(1, layer.hidden_size, dtype=x.dtype)
        hs = {}
        for t in ts:
            prod = x[s, t:t + 1] @ w_ih.t() + h @ w_hh.t()
            if k is not None:
                prod.register_hook(lambda g: topk_per_gate(g, k))
            i, f, gg, o = (prod + b).chunk(4, dim=1)
            c = f.sigmoid() * c + i.sigmoid() * gg.tanh()
            h = o.sigmoid() * c.tanh()
            hs[t] = h
        rows.append(torch.cat([hs.get(t, torch.zeros_like(h)) for t in range(x.shape[1])]))
    return torch.stack(rows) + out


def _fused_available():
    from mesimp_lib.fused import kernels

    return kernels() is not None


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kernel, compact", [("torch", 0.0), ("torch", 1.0), ("fused", 0.5)])
def test_topk_matches_masked_dense_reference(reverse, kernel, compact):
    if kernel == "fused" and not _fused_available():
        pytest.skip("native kernels cannot be built here")
    k = 2
    x, w = inputs(5)
    w = w[..., :H]
    torch.manual_seed(2)
    layer = MePropLSTM(I, H, k=k, reverse=reverse, compact_threshold=compact, kernel=kernel, dtype=torch.float64)
    out = layer(x, LENGTHS)
    (out * w).sum().backward()
    got = {n: getattr(layer, n).grad.clone() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    gx = x.grad.clone()
    for p in layer.parameters():
        p.grad = None
    x.grad = None
    ref = reference_bptt(layer, x, LENGTHS, k)
    torch.testing.assert_close(out, ref)
    (ref * w).sum().backward()
    torch.testing.assert_close(gx, x.grad)
    for n, g in got.items():
        torch.testing.assert_close(g, getattr(layer, n).grad, msg=n)
    # sparse really: only rows some token selected have a weight gradient, macs below dense
    assert (got["weight_hh"] != 0).any(1).sum() <= int(LENGTHS.sum()) * 4 * k
    assert layer.stats.macs_ratio < 1.0
    assert layer.stats.counts.sum() > 0 and layer.stats.examples == int(LENGTHS.sum())


def unified_per_gate(g, k):
    """One index set per gate for the whole batch, ranked by sum |g| over the batch."""
    n = g.shape[0]
    v = g.reshape(n, 4, -1)
    idx = v.abs().sum(0).topk(k, dim=1).indices.unsqueeze(0).expand(n, -1, -1)
    return torch.zeros_like(v).scatter_(2, idx, v.gather(2, idx)).reshape(n, -1)


def test_unified_matches_batched_reference():
    k = 2
    x, w = inputs(11)
    w = w[..., :H]
    torch.manual_seed(5)
    layer = MePropLSTM(I, H, k=k, mode="unified", kernel="torch", dtype=torch.float64)
    out = layer(x, LENGTHS)
    (out * w).sum().backward()
    got = [layer.weight_ih.grad.clone(), layer.weight_hh.grad.clone(), layer.bias_hh.grad.clone(), x.grad.clone()]
    layer.zero_grad()
    x.grad = None
    # batched loop over all T (padding rows compute junk, masked out of the loss: zero gradient)
    h = c = torch.zeros(B, H, dtype=torch.float64)
    outs = []
    for t in range(T):
        prod = x[:, t] @ layer.weight_ih.t() + h @ layer.weight_hh.t()
        prod.register_hook(lambda g: unified_per_gate(g, k))
        i, f, gg, o = (prod + layer.bias_ih + layer.bias_hh).chunk(4, dim=1)
        c = f.sigmoid() * c + i.sigmoid() * gg.tanh()
        h = o.sigmoid() * c.tanh()
        outs.append(h)
    mask = (torch.arange(T).unsqueeze(0) < LENGTHS.unsqueeze(1)).unsqueeze(2)
    ref = torch.stack(outs, 1) * mask
    torch.testing.assert_close(out, ref)
    (ref * w).sum().backward()
    for a, b in zip(got, [layer.weight_ih.grad, layer.weight_hh.grad, layer.bias_hh.grad, x.grad]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mode", ["per_example", "unified", "random"])
def test_padding_does_not_leak(mode):
    torch.manual_seed(0)
    layer = MePropLSTM(I, H, k=2, mode=mode, reverse=True, dtype=torch.float64)
    x, w = inputs(7)
    w = w[..., :H]
    x2 = x.detach().clone()
    pad = torch.arange(T).unsqueeze(0) >= LENGTHS.unsqueeze(1)  # (B, T)
    x2[pad] = 1e3  # junk in the padding
    x2.requires_grad_(True)
    grads = []
    for xx in (x, x2):
        torch.manual_seed(4)  # the same random draws
        out = layer(xx, LENGTHS)
        assert (out[pad] == 0).all()
        (out * w).sum().backward()
        assert (xx.grad[pad] == 0).all()
        grads.append((out.detach(), xx.grad[~pad].clone(), layer.weight_hh.grad.clone()))
        layer.zero_grad()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_unpacked_equals_one_sentence_at_a_time():
    torch.manual_seed(0)
    layer = MePropLSTM(I, H, k=3, dtype=torch.float64)
    x, w = inputs(9)
    w = w[..., :H]
    out = layer(x, LENGTHS)
    (out * w).sum().backward()
    g = layer.weight_ih.grad.clone()
    layer.zero_grad()
    total = 0
    for s in range(B):
        n = int(LENGTHS[s])
        o = layer(x[s:s + 1, :n], None)
        torch.testing.assert_close(o[0], out[s, :n])
        total = total + (o * w[s:s + 1, :n]).sum()
    total.backward()
    torch.testing.assert_close(layer.weight_ih.grad, g)


def test_step_backward_matches_autograd():
    torch.manual_seed(0)
    layer = MePropLSTM(3, 4, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    h0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    dh = torch.randn(2, 4, dtype=torch.float64)
    pre = x @ layer.weight_ih.t() + h0 @ layer.weight_hh.t() + layer.bias_ih + layer.bias_hh
    pre.retain_grad()
    i, f, g, o = pre.chunk(4, 1)
    c = f.sigmoid() * c0 + i.sigmoid() * g.tanh()
    hh = o.sigmoid() * c.tanh()
    (hh * dh).sum().backward()
    with torch.no_grad():
        dense = step_backward(x, h0, c0, layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh, dh)
        sparse = step_backward(x, h0, c0, layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh, dh, k=1)
    torch.testing.assert_close(dense["dG"], pre.grad)
    torch.testing.assert_close(dense["dh_prev"], h0.grad)
    torch.testing.assert_close(dense["dc_prev"], c0.grad)
    torch.testing.assert_close(dense["dW_hh"], layer.weight_hh.grad)
    assert set(sparse["selected"]) == {"i", "f", "g", "o"} and sparse["selected"]["i"].shape == (2, 1)
    torch.testing.assert_close(sparse["kept"], topk_per_gate(pre.grad, 1))
    assert ((sparse["dW_ih"] != 0).any(1).nonzero().squeeze(1) == sparse["rows"]).all()
    assert sparse["rows"].numel() <= 2 * 4 and torch.equal(sparse["cells"], torch.unique(sparse["rows"] % 4))


@pytest.mark.parametrize("kwargs, name", [
    ({"k": -1}, "k"), ({"k": 1.5}, "k"), ({"mode": "top"}, "mode"), ({"hidden_size": 0}, "hidden_size"),
    ({"input_size": 2.5}, "input_size"), ({"compact_threshold": 2}, "compact_threshold"),
    ({"kernel": "cuda"}, "kernel"),
])
def test_bad_arguments(kwargs, name):
    args = {"input_size": I, "hidden_size": H, **kwargs}
    with pytest.raises(ValueError, match=name):
        MePropLSTM(**args)


def test_bad_inputs():
    layer = MePropLSTM(I, H)
    with pytest.raises(ValueError, match="input_size"):
        layer(torch.randn(2, 3, I + 1))
    with pytest.raises(ValueError, match="lengths"):
        layer(torch.randn(2, 3, I), torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="x must be"):
        layer(torch.randn(3, I))


# ----------------------------------------------------------------------------- meSimp


class Tiny(nn.Module):
    """A BiLSTM feeding a linear layer, as the tagger."""

    def __init__(self, k=2, h=10):
        super().__init__()
        self.fwd = MePropLSTM(I, h, k, dtype=torch.float64)
        self.bwd = MePropLSTM(I, h, k, reverse=True, dtype=torch.float64)
        self.output = nn.Linear(2 * h, 3, dtype=torch.float64)

    def forward(self, x, lengths):
        return self.output(torch.cat([self.fwd(x, lengths), self.bwd(x, lengths)], 2))


def data(n, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, T, I, generator=gen, dtype=torch.float64), torch.randint(0, 3, (B, T), generator=gen))
            for _ in range(n)]


def train_steps(model, opt, batches):
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x, LENGTHS).reshape(-1, 3), y.reshape(-1), reduction="none")
        mask = (torch.arange(T).unsqueeze(0) < LENGTHS.unsqueeze(1)).reshape(-1)
        (loss * mask).sum().backward()
        opt.step()


def test_mask_equals_physical_and_removed_cells_stay_removed():
    torch.manual_seed(0)
    a = Tiny()
    b = Tiny()
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=1e-2), torch.optim.Adam(b.parameters(), lr=1e-2)
    sa = LSTMSimplifier([a.fwd, a.bwd], a.output, prune_rate=0.15, realisation="mask")
    sb = LSTMSimplifier([b.fwd, b.bwd], b.output, prune_rate=0.15, realisation="physical")
    ids_a = [a.fwd.weight_hh, a.output.weight]
    batches = data(12)
    removed_ever = [set(), set()]
    for r in range(3):
        chunk = batches[4 * r:4 * r + 4]
        train_steps(a, opt_a, chunk)
        train_steps(b, opt_b, chunk)
        assert [rec.seen for rec in sa.records] == [int(LENGTHS.sum()) * 4] * 2
        ea, eb = sa.prune(opt_a), sb.prune(opt_b)
        assert ea["removed"] == eb["removed"] and sa.widths == sb.widths == [
            b.fwd.hidden_size, b.bwd.hidden_size]
        x = batches[0][0]
        with torch.no_grad():
            torch.testing.assert_close(a(x, LENGTHS), b(x, LENGTHS), rtol=1e-10, atol=1e-10)
        for d, lstm in enumerate((a.fwd, a.bwd)):
            dead = (~sa.alive[d]).nonzero().squeeze(1).tolist()
            assert removed_ever[d] <= set(dead)  # removed cells never come back
            removed_ever[d] = set(dead)
            h = lstm.hidden_size
            rows = torch.tensor([j + g * h for j in dead for g in range(4)], dtype=torch.int64)
            assert (lstm.weight_ih[rows] == 0).all() and (lstm.weight_hh[:, dead] == 0).all()
            assert set(sb.unit_ids[d].tolist()) == set(range(h)) - set(dead)
    assert sum(sa.widths) < 20  # something was pruned
    assert [a.fwd.weight_hh, a.output.weight] == ids_a  # mask: parameter objects kept
    # physical: the optimizer holds the new parameters with state sliced to their shapes
    params = {id(p) for g in opt_b.param_groups for p in g["params"]}
    assert params == {id(p) for p in b.parameters()}
    for p in b.parameters():
        assert opt_b.state[p]["exp_avg"].shape == p.shape
    assert b.output.weight.shape == (3, sum(sb.widths))
    # training on keeps them equal (state was sliced consistently)
    train_steps(a, opt_a, batches[:2])
    train_steps(b, opt_b, batches[:2])
    with torch.no_grad():
        torch.testing.assert_close(a(batches[1][0], LENGTHS), b(batches[1][0], LENGTHS), rtol=1e-9, atol=1e-9)


def test_record_counts_cells_per_token():
    torch.manual_seed(0)
    m = Tiny(k=1)
    s = LSTMSimplifier([m.fwd, m.bwd], m.output, prune_rate=0.5)
    x, y = data(1)[0]
    train_steps(m, torch.optim.SGD(m.parameters(), lr=0.0), [(x, y)])
    rec = s.records[0]
    assert rec.seen == int(LENGTHS.sum())
    # one token hits at most 4 cells (k=1 per gate, merged over gates), at least 1
    assert int(LENGTHS.sum()) <= int(rec.hits.sum()) <= 4 * int(LENGTHS.sum())
    assert int(rec.hits.max()) <= rec.seen


def test_simplifier_bad_arguments():
    m = Tiny()
    with pytest.raises(ValueError, match="prune_rate"):
        LSTMSimplifier([m.fwd, m.bwd], m.output, prune_rate=2)
    with pytest.raises(ValueError, match="realisation"):
        LSTMSimplifier([m.fwd, m.bwd], m.output, realisation="cut")
    with pytest.raises(ValueError, match="next_layer"):
        LSTMSimplifier([m.fwd], m.output)
