"""selection.hit_mask (the one rule for "a hit" every record uses) and the native record kept in one place."""

import pytest
import torch

from mesimp_lib.meprop import MePropLinear
from mesimp_lib.selection import heap_hits, hit_mask, select_per_example, select_random, select_unified

torch.set_num_threads(1)


def relu_gradient(n=7, width=12, seed=0):
    """An output gradient with exact zeros (as behind a ReLU): rows with fewer non-zeros than k too."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(n, width, generator=gen, dtype=torch.float64)
    return g * (torch.rand(n, width, generator=gen) < 0.4)


def counted_by_hand(g, idx, count_zero_hits):
    """The rule written out entry by entry: unit j counts once for example b when selected there and non-zero."""
    out = torch.zeros(g.shape[1], dtype=torch.int64)
    for b in range(g.shape[0]):
        for j in (idx if idx.dim() == 1 else idx[b]).tolist():
            out[j] += int(count_zero_hits or g[b, j] != 0)
    return out


@pytest.mark.parametrize("count_zero_hits", [False, True])
@pytest.mark.parametrize("select", [select_per_example, select_random, select_unified])
def test_hit_mask_counts_the_selected_entries_by_the_rule(select, count_zero_hits):
    g = relu_gradient()
    torch.manual_seed(1)
    idx = select(g, 4)
    mask = hit_mask(g, idx, count_zero_hits)
    assert mask.dtype == torch.bool and mask.shape == g.shape
    assert torch.equal(mask.sum(0), counted_by_hand(g, idx, count_zero_hits))


def test_hit_mask_of_a_dense_backward_and_of_the_heap():
    g = relu_gradient()
    assert torch.equal(hit_mask(g, None), g != 0)
    assert bool(hit_mask(g, None, count_zero_hits=True).all())
    top = select_per_example(g, 4)
    heap = hit_mask(g, top, True, heap=(4, 12, None))
    assert torch.equal(heap.sum(0), heap_hits(g, 4, top))  # the C# heap: fillers in rows with < k non-zeros
    assert torch.equal(hit_mask(g, None, True, heap=(4, 12, None)), heap)  # the heap selects the top-k itself
    assert torch.equal(hit_mask(g, top, False, heap=(4, 12, None)), hit_mask(g, top))  # heap only with zero hits


def _native_available():
    from mesimp_lib.fused import kernels

    return kernels() is not None


@pytest.mark.parametrize("kernel", ["torch", "fused", "native"])
@pytest.mark.parametrize("count_zero_hits", [False, True])
@pytest.mark.parametrize("mode", ["per_example", "unified", "random"])
def test_layer_counts_are_hit_mask_sums(mode, count_zero_hits, kernel):
    """The record of every kernel (the C++ ones count in the kernel) is the hit rule summed over the batch."""
    if kernel != "torch" and not _native_available():
        pytest.skip("native kernels cannot be built here")
    layer = MePropLinear(5, 12, 4, mode, kernel=kernel, count_zero_hits=count_zero_hits)
    g = relu_gradient(seed=3).float()
    layer(torch.randn(7, 5)).backward(g)
    heap = (4, 12, None) if mode == "per_example" else None
    expected = hit_mask(g, layer.stats.last_indices, count_zero_hits, heap).sum(0)
    assert torch.equal(layer.stats.counts, expected)


@pytest.mark.skipif(not _native_available(), reason="native kernels cannot be built here")
def test_native_record_lives_in_one_tensor():
    """A native layer's record is the tensor the C++ writes; a step recorded in Python (meSimp's hooks) writes the
    same tensor, so the totals continue across both paths and nothing is kept beside it."""
    layer = MePropLinear(8, 12, 3, kernel="native", weight_grad="sparse")
    st = layer.stats
    x = torch.randn(5, 8)
    layer(x).sum().backward()  # native
    layer.hooks.grad_mask = torch.ones(12)
    layer(x).sum().backward()  # Python (fused) path
    python_last = st.last_indices.clone()
    layer.hooks.grad_mask = None
    layer(x).sum().backward()  # native again
    assert st._native[:6].tolist() == [st.backward_calls, st.examples, st.last_rows_touched, st.rows_touched_total,
                                       st.macs_done, st.macs_dense]
    assert st.backward_calls == 3 and st.examples == 15
    assert torch.equal(st.last_indices, python_last)  # the same selection of the same gradient
    assert not [key for key in vars(st) if key.startswith("_py")]
    st.reset()
    assert st.last_indices is None and st._native.tolist() == [0] * 7
