"""POS tagging task: encoding, bucketed batches, the BiLSTM tagger, training end to end."""

import pytest
import torch

from mesimp_lib.tasks.pos import BiLSTMTagger, batches, encode_pos, tagging_accuracy
from mesimp_lib.training import TrainConfig, train

torch.set_num_threads(1)

KEYS = {"config", "command", "best_dev_acc", "test_acc", "best_epoch", "best_step", "final_dev_acc",
        "final_test_acc", "history", "timing", "backprop_ratio", "widths", "rows", "updates", "meprop",
        "environment", "data"}


@pytest.fixture(scope="module")
def data():
    return encode_pos(tagset="upos", min_count=2, train_limit=100)


def test_encoding(data):
    assert len(data.train) == 100 and len(data.dev) > 1000 and len(data.tags) == 17
    assert data.words.itos[:2] == ["<pad>", "<unk>"]
    w, t = data.train[0]
    assert w.dtype == torch.int64 and w.shape == t.shape and (w > 0).all()
    assert "PosData(tagset=upos, train=100" in repr(data)


def test_batches_cover_every_sentence_once(data):
    gen = torch.Generator().manual_seed(0)
    bs = batches(data.train, 16, gen)
    assert len(bs) == 7
    tokens = sum(int(lengths.sum()) for _, _, lengths in bs)
    assert tokens == sum(len(w) for w, _ in data.train)
    for words, tags, lengths in bs:
        pad = torch.arange(words.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)
        assert (words[pad] == 0).all() and (tags[pad] == -100).all() and (words[~pad] > 0).all()


def test_tagger_dense_padding_invariant(data):
    torch.manual_seed(0)
    model = BiLSTMTagger(len(data.words), len(data.tags), embed_dim=8, hidden=6).double()
    words, tags, lengths = batches(data.train[:5], 5)[0]
    full = model(words, lengths)
    for s in range(5):
        n = int(lengths[s])
        alone = model(words[s:s + 1, :n], lengths[s:s + 1])
        torch.testing.assert_close(alone[0], full[s, :n])
    acc = tagging_accuracy(model, batches(data.dev[:20], 8))
    assert 0.0 <= acc <= 1.0 and model.training


@pytest.mark.parametrize("method, extra", [("dense", {}), ("meprop", {"k": 3}), ("random", {"k": 3}),
                                           ("mesimp", {"k": 3, "prunes_per_epoch": 2, "prune_rate": 0.05})])
def test_train_pos_end_to_end(data, method, extra):
    config = TrainConfig(task="pos", method=method, hidden=32, embed_dim=16, epochs=1, batch_size=16,
                         train_limit=100, evals_per_epoch=1, rows_every=2, **extra)
    seen = []
    r = train(config, data=data, progress=False, on_eval=lambda p, m: seen.append(p["dev_acc"]))
    assert KEYS <= set(r)
    lstm_kernel = r["data"].pop("lstm_kernel")
    assert r["data"] == {"train_sentences": 100, "train_tokens": sum(len(w) for w, _ in data.train),
                         "vocab_size": len(data.words), "tags": 17, "tagset": "upos"}
    assert lstm_kernel == "dense BPTT (no top-k)" if config.hidden_k is None else lstm_kernel in (
        "fused C++ kernels",) or lstm_kernel.startswith("pure PyTorch")
    assert seen == [r["final_dev_acc"]] and 0.0 < r["best_dev_acc"] <= 1.0
    assert r["timing"]["steps"] == 7 and len(r["timing"]["epoch_s"]) == 1
    if method != "mesimp":  # (meSimp shrinks the width, so k / width grows)
        assert r["backprop_ratio"] == (1.0 if method == "dense" else 3 / 32)
    assert len(r["meprop"]["backward_macs_ratio"]) == 2 and len(r["rows"]["with_grad"]) == 2
    if method == "dense":
        assert r["meprop"]["backward_macs_ratio"] == [1.0, 1.0]
    else:
        assert max(r["meprop"]["backward_macs_ratio"]) < 1.0
    if method == "mesimp":
        assert {"widths_history", "final_widths", "average_width", "params"} <= set(r)
        assert len(r["widths_history"]) == 3 and r["final_widths"] == r["widths"]
        assert r["params"]["final"] <= r["params"]["start"]
    assert "--task pos" in r["command"]


def test_train_pos_is_reproducible(data):
    config = TrainConfig(task="pos", method="meprop", k=4, hidden=16, embed_dim=8, epochs=1, batch_size=32,
                         train_limit=60, evals_per_epoch=1, rows_every=0)
    a = train(config, data=data, progress=False)
    b = train(config, data=data, progress=False)
    assert a["history"] == b["history"]


def test_mesimp_mask_realisation_runs(data):
    config = TrainConfig(task="pos", method="mesimp", k=3, hidden=24, embed_dim=8, epochs=1, batch_size=10,
                         train_limit=100, evals_per_epoch=1, prunes_per_epoch=3, prune_rate=0.1,
                         realisation="mask", rows_every=0)
    r = train(config, data=data, progress=False, return_model=True)
    model = r["model"]
    assert model.widths == [24, 24]  # shapes kept; final_widths counts the cells alive
    for lstm, alive in zip(model.lstms, r["final_widths"]):
        dead = 0 if lstm.cell_mask is None else int((lstm.cell_mask == 0).sum())
        assert dead == 24 - alive


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="tagset"):
        encode_pos(tagset="ptb")
    with pytest.raises(ValueError, match="train_limit"):
        encode_pos(train_limit=0)
    with pytest.raises(ValueError, match="hidden"):
        train(TrainConfig(task="pos", hidden=[8, 8], epochs=1, train_limit=10), data=data, progress=False)
    with pytest.raises(ValueError, match="dropout"):
        BiLSTMTagger(10, 3, dropout=1.5)
    with pytest.raises(ValueError, match="k"):
        BiLSTMTagger(10, 3, hidden=8, k=-2)


def test_lazy_adam_trains_the_tagger_and_moves_only_the_words_seen(data):
    from mesimp_lib.lazy import LazyAdam

    config = TrainConfig(task="pos", method="meprop", k=3, hidden=16, embed_dim=8, epochs=1, batch_size=32,
                         train_limit=100, evals_per_epoch=1, optimizer="lazy_adam")
    r = train(config, data=data, progress=False, return_model=True)
    assert r["model"].embed.sparse and 0 <= r["test_acc"] <= 1
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(task="pos", optimizer="lazy_sgd", grad_clip=5.0)
    # one step by hand: embedding rows of words not in the batch stay as they were (and so do their moments)
    torch.manual_seed(0)
    model = BiLSTMTagger(len(data.words), len(data.tags), embed_dim=8, hidden=6, k=2, sparse_embeddings=True)
    words, tags, lengths = batches(data.train[:4], 4)[0]
    opt = LazyAdam(model.parameters())
    before = model.embed.weight.detach().clone()
    logits = model(words, lengths)
    mask = torch.arange(words.shape[1])[None, :] < lengths[:, None]
    torch.nn.functional.cross_entropy(logits[mask], tags[mask]).backward()
    assert model.embed.weight.grad.is_sparse
    opt.step()
    moved = (model.embed.weight.detach() != before).any(1)
    seen = torch.zeros(len(data.words), dtype=torch.bool)
    seen[words[mask].unique()] = True
    assert not moved[~seen].any() and moved[seen].any()
