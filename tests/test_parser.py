"""The Chen & Manning parser: oracle, projectivity, features, decoding, metric, training."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from mesimp_lib.mesimp import Simplifier
from mesimp_lib.tasks import parser as P
from mesimp_lib.tasks.ud import Sentence, Treebank, load_ud
from mesimp_lib.training import TrainConfig, train


@pytest.fixture(scope="module")
def ud():
    return load_ud()


@pytest.fixture(scope="module")
def vocab(ud):
    return P.ParserVocab.build(ud.train, min_count=2)


def toy(heads, words=None, upos=None, deprels=None):
    n = len(heads)
    return Sentence(
        words=words or [chr(ord("a") + i) for i in range(n)],
        upos=upos or [f"T{i + 1}" for i in range(n)],
        xpos=[f"X{i + 1}" for i in range(n)],
        heads=list(heads),
        deprels=deprels or [f"l{i + 1}" for i in range(n)],
    )


def is_tree(heads):
    n = len(heads)
    if len(heads) != n or any(not 0 <= h <= n for h in heads) or sum(h == 0 for h in heads) != 1:
        return False
    for i in range(1, n + 1):  # following heads from every word reaches ROOT within n steps
        j, steps = i, 0
        while j != 0:
            j, steps = heads[j - 1], steps + 1
            if steps > n:
                return False
    return True


# ----------------------------------------------------------------------------- oracle and trees


def test_oracle_rebuilds_every_projective_training_tree(ud, vocab):
    proj = [s for s in ud.train if P.is_projective(s.heads)]
    assert 0 < len(ud.train) - len(proj) < 0.05 * len(ud.train)  # EWT: a few % non-projective
    feats, gold, states = P.precompute(proj, vocab)
    assert feats.shape == (2 * sum(len(s) for s in proj), 48) and gold.shape == (len(feats),)
    heads, labels = states.result()
    assert heads == [s.heads for s in proj]
    assert labels == [s.deprels for s in proj]


def test_plain_and_batched_implementations_agree(ud, vocab):
    sents = [s for s in ud.dev[:120] if P.is_projective(s.heads)]
    for s in sents[:40]:
        steps = P.oracle_steps(s, vocab)
        feats, gold, _ = P.precompute([s], vocab)
        assert [vocab.transition_id(st["transition"]) for st in steps] == gold.tolist()
        assert [st["features"] for st in steps] == feats.tolist()
    # the plain Configuration rebuilds the gold tree too
    for s in sents:
        c = P.Configuration(len(s))
        while not c.is_terminal():
            c.apply(P.oracle(c, s.heads, s.deprels))
        assert c.heads[1:] == s.heads and c.labels[1:] == s.deprels


def test_is_projective_hand_made():
    assert P.is_projective([0])
    assert P.is_projective([2, 0, 2])  # a <- b -> c
    assert P.is_projective([2, 4, 4, 0, 4, 4, 6, 9, 4])
    assert not P.is_projective([3, 4, 0, 3])  # 1<-3 and 2<-4 cross
    assert not P.is_projective([0, 4, 1, 1])  # 3<-1 spans 2, whose head 4 lies outside
    assert not P.is_projective([2, 0, 5, 2, 2])  # 3<-5 crosses 2->4
    with pytest.raises(ValueError, match="heads"):
        P.is_projective([0, 7])


def test_transition_ids_round_trip(vocab):
    r = len(vocab.relations)
    assert vocab.n_transitions == 1 + 2 * r
    for tid in range(vocab.n_transitions):
        assert vocab.transition_id(vocab.transition(tid)) == tid
    with pytest.raises(ValueError, match="transition"):
        vocab.transition_id((P.LEFT, "no-such-label"))


# ----------------------------------------------------------------------------- features


def test_features_of_a_hand_made_configuration():
    #   word:  1  2  3  4  5  6  7  8  9   (4 is the root word)
    heads = [2, 4, 4, 0, 4, 4, 6, 9, 4]
    s = toy(heads)
    vocab = P.ParserVocab.build([s], min_count=1)
    # with every entry seen once, ids follow the text: word/tag/label of token t -> 3 + t
    assert vocab.words.itos[:4] == ["<pad>", "<unk>", "<null>", "<root>"]
    c = P.Configuration(len(s))
    while c.stack != [0, 4, 8]:
        c.apply(P.oracle(c, s.heads, s.deprels))
    assert c.buffer == [9]
    NULL, ROOT = 2, 3
    pos = P.feature_tokens(c)
    #       s1 s2 s3 b1  b2  b3 | lc1 rc1 lc2 rc2 (s1) | lc1 rc1 lc2 rc2 (s2) | lc1lc1 rc1rc1 (s1) (s2)
    assert pos == [8, 4, 0, 9, -1, -1, -1, -1, -1, -1, 2, 6, 3, 5, -1, -1, 1, 7]
    words = [11, 7, ROOT, 12, NULL, NULL, NULL, NULL, NULL, NULL, 5, 9, 6, 8, NULL, NULL, 4, 10]
    labels = [NULL, NULL, NULL, NULL, 5, 9, 6, 8, NULL, NULL, 4, 10]
    feats = P.extract_features(c, s, vocab)
    assert len(feats) == len(P.FEATURE_NAMES) == 48
    assert feats == words + words + labels  # tags have the same ids as words here
    # the batched implementation at the same configuration
    steps = P.oracle_steps(s, vocab)
    at = next(i for i, st in enumerate(steps) if st["stack"] == [0, 4, 8])
    assert P.precompute([s], vocab)[0][at].tolist() == feats


def test_unknown_words_and_tagset():
    s = toy([2, 0, 2], words=["the", "cat", "the"])
    v = P.ParserVocab.build([s], min_count=2, tagset="xpos")
    words, tags = v.encode(s)
    assert words.tolist() == [3, v.words.index("the"), 1, v.words.index("the")]  # "cat" seen once -> <unk>
    assert tags.tolist()[1:] == [v.tags.index(t) for t in s.xpos]


# ----------------------------------------------------------------------------- decoding and the metric


class _PrefersIllegal(nn.Module):
    """Scores that always prefer LEFT-ARC (illegal whenever s2 is ROOT or the stack is short)."""

    def __init__(self, n_transitions):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.n = n_transitions

    def forward(self, feats):
        scores = torch.zeros(len(feats), self.n)
        scores[:, 1] = 10.0
        return scores


def test_decoding_always_gives_a_well_formed_tree(ud, vocab):
    torch.manual_seed(0)
    cfg = TrainConfig(task="parse", method="dense", hidden=32)
    sents = ud.dev[:300]
    for model in (P.build_parser_model(cfg, vocab), _PrefersIllegal(vocab.n_transitions)):
        heads, labels = P.parse(model, sents, vocab)
        for s, h, lab in zip(sents, heads, labels):
            assert len(h) == len(s) and is_tree(h) and P.is_projective(h)
            assert all(x in vocab.relations for x in lab)


def test_scores_exclude_punctuation():
    s = Sentence(["Hi", "you", "!"], ["INTJ", "PRON", "PUNCT"], ["UH", "PRP", "."], [0, 1, 1],
                 ["root", "vocative", "punct"])
    assert P.attachment_scores([s], [[0, 1, 2]], [["root", "vocative", "det"]]) == {"uas": 1.0, "las": 1.0, "words": 2}
    assert P.attachment_scores([s], [[0, 3, 1]], [["root", "vocative", "punct"]])["uas"] == 0.5
    assert P.attachment_scores([s], [[0, 1, 1]], [["root", "obj", "punct"]]) == {"uas": 1.0, "las": 0.5, "words": 2}


# ----------------------------------------------------------------------------- model, meSimp, training


def test_mask_and_physical_pruning_give_identical_outputs(ud, vocab):
    feats, gold, _ = P.precompute([s for s in ud.train[:60] if P.is_projective(s.heads)], vocab)
    x, y = torch.from_numpy(feats), torch.from_numpy(gold)
    torch.manual_seed(0)
    base = P.ParserModel(len(vocab.words), len(vocab.tags), len(vocab.labels), vocab.n_transitions,
                         embed_dim=8, hidden=40, k=5).double()
    models, opts, simps = [], [], []
    for realisation in ("mask", "physical"):
        m = copy.deepcopy(base)
        models.append(m)
        opts.append(torch.optim.Adam(m.parameters(), lr=1e-3))
        simps.append(Simplifier(m, prune_rate=0.1, realisation=realisation))

    def step(i):
        for m, o in zip(models, opts):
            o.zero_grad()
            nn.functional.cross_entropy(m(x[i * 50 : (i + 1) * 50]), y[i * 50 : (i + 1) * 50]).backward()
            o.step()

    for i in range(4):
        step(i)
    events = [s.prune(o) for s, o in zip(simps, opts)]
    assert events[0]["widths"] == events[1]["widths"] and sum(events[0]["removed"]) > 0
    assert models[1].widths == events[1]["widths"] and models[0].widths == [40]
    torch.testing.assert_close(models[0](x[:300]), models[1](x[:300]), rtol=0, atol=1e-10)
    for i in range(4, 8):  # training continues the same way (optimizer state sliced along)
        step(i)
    torch.testing.assert_close(models[0](x[:300]), models[1](x[:300]), rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def small(ud):
    return Treebank(ud.train, ud.dev[:80], ud.test[:80])


KEYS = {"config", "command", "metric", "best_dev_acc", "test_acc", "test_las", "best_epoch", "best_step",
        "final_dev_acc", "final_test_acc", "history", "timing", "backprop_ratio", "widths", "rows", "updates",
        "meprop", "data", "environment"}


@pytest.mark.parametrize("method,realisation", [("dense", "physical"), ("meprop", "physical"),
                                                ("mesimp", "mask"), ("mesimp", "physical")])
def test_tiny_training_runs(small, method, realisation):
    cfg = TrainConfig(task="parse", method=method, k=8, hidden=64, epochs=1, batch_size=128, train_limit=200,
                      evals_per_epoch=2, prunes_per_epoch=2, realisation=realisation, prune_rate=0.05, rows_every=10)
    points = []
    r = train(cfg, data=small, progress=False, on_eval=lambda p, m: points.append(p), return_model=True)
    assert KEYS <= set(r) and "model" in r
    assert len(points) == len(r["history"]) == 2
    assert set(points[0]) == {"step", "epoch", "train_loss", "dev_acc", "test_acc", "dev_las", "test_las"}
    d = r["data"]
    assert d["train_sentences"] == 200 and d["projective_used"] + d["skipped_nonprojective"] == 200
    assert d["train_transitions"] > 0 and d["dev_sentences"] == 80
    assert 0 <= r["test_acc"] <= 1 and min(r["timing"]["epoch_s"]) > 0 and r["timing"]["steps"] > 0
    want = {"dense": 1.0, "meprop": 8 / 64, "mesimp": 8 / r["model"].widths[0]}[method]
    assert r["backprop_ratio"] == pytest.approx(want, abs=1e-6)
    if method == "mesimp":
        assert {"widths_history", "final_widths", "average_width", "params"} <= set(r)
        assert len(r["widths_history"]) == 3
        assert r["final_widths"] == r["widths_history"][-1]["widths"]
        if realisation == "physical":
            assert r["model"].widths == r["final_widths"]
    heads, _ = P.parse(r["model"], small.dev[:20])  # the returned model carries its vocab
    assert all(is_tree(h) for h in heads)


def test_bad_values_raise(small, vocab):
    with pytest.raises(ValueError, match="hidden"):
        train(TrainConfig(task="parse", hidden=[32, 32], train_limit=20, epochs=1), data=small, progress=False)
    with pytest.raises(ValueError, match="tagset"):
        TrainConfig(task="parse", tagset="ptb")
    with pytest.raises(ValueError, match="embed_dim"):
        TrainConfig(task="parse", embed_dim=0)
    with pytest.raises(ValueError, match="min_count"):
        P.ParserVocab.build(small.train[:5], min_count=0)
    with pytest.raises(ValueError, match="activation"):
        P.ParserModel(10, 10, 10, 5, activation="tanh")
    with pytest.raises(ValueError, match="hidden"):
        P.ParserModel(10, 10, 10, 5, hidden=0)
    with pytest.raises(ValueError, match="vocab"):
        P.parse(P.ParserModel(10, 10, 10, 5), small.dev[:2])
    with pytest.raises(ValueError, match="projective"):
        P.oracle_steps(toy([3, 4, 0, 3]), vocab)
    c = P.Configuration(2)
    with pytest.raises(ValueError, match="LEFT is not legal"):
        c.apply((P.LEFT, "nsubj"))


@pytest.mark.parametrize("optimizer", ["lazy_adam", "lazy_sgd"])
def test_lazy_optimizers_train_the_parser(small, optimizer):
    cfg = TrainConfig(task="parse", method="meprop", k=8, hidden=64, epochs=1, batch_size=128, train_limit=100,
                      evals_per_epoch=1, optimizer=optimizer, rows_every=5)
    r = train(cfg, data=small, progress=False, return_model=True)
    model = r["model"]
    assert all(e.sparse for e in (model.word_embed, model.tag_embed, model.label_embed))
    assert 0 <= r["test_acc"] <= 1 and r["config"]["optimizer"] == optimizer
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(task="parse", optimizer=optimizer, grad_clip=5.0)


def test_lazy_step_moves_only_the_embedding_rows_looked_up():
    from mesimp_lib.lazy import LazyAdam

    torch.manual_seed(0)
    model = P.ParserModel(40, 12, 9, 5, embed_dim=4, hidden=16, k=3, sparse_embeddings=True)
    feats = torch.randint(0, 9, (6, P.N_FEATURES))  # ids < 9: word rows 9.. (of 40) are never looked up
    opt = LazyAdam(model.parameters())
    before = model.word_embed.weight.detach().clone()
    torch.nn.functional.cross_entropy(model(feats), torch.randint(0, 5, (6,))).backward()
    assert model.word_embed.weight.grad.is_sparse
    opt.step()
    moved = (model.word_embed.weight.detach() != before).any(1)
    assert not moved[9:].any() and moved[:9].any()
