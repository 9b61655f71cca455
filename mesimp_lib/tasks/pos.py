"""POS tagging on UD English EWT with a BiLSTM tagger (METHODS.md section 4).

The paper's setting: one bidirectional LSTM layer, h = 500 per direction, meProp on the
gates (k = 5..20 per gate), a dense output layer, mini-batch 1 sentence, Adam. Here the
data is UD English EWT (UPOS or XPOS tags) instead of the Penn Treebank.

Model: word embeddings learned from scratch (``embed_dim``, default 100; training words
seen fewer than ``min_count`` times become ``<unk>``) -> a forward and a backward
``MePropLSTM`` -> concatenation (2h) -> a dense output layer over the tags. Metric: token
accuracy over every token of dev / test.

Batching: sentences are shuffled, cut into pools of 50 batches, sorted by length inside a
pool and batched (``batch_size`` sentences), then the batch order is shuffled, so a batch
holds sentences of similar length and padding is small; padding never reaches the model
(``MePropLSTM`` packs the batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..fused import status as fused_status
from ..lstm import LSTMSimplifier, MePropLSTM, step_backward
from ..meprop import MePropLinear
from ..validate import check_bool, check_choice, check_int, check_size
from .base import Task, check_head_args, one_width
from .ud import Treebank, Vocab, load_ud

__all__ = ["BiLSTMTagger", "PosData", "batches", "PosTask", "build_tagger", "encode_pos", "step_backward", "tagging_accuracy"]

POOL = 50  # batches per length-sorting pool


@dataclass
class PosData:
    """Encoded splits: lists of (word ids, tag ids) LongTensor pairs, one per sentence."""

    words: Vocab
    tags: Vocab
    tagset: str
    train: list[tuple[torch.Tensor, torch.Tensor]]
    dev: list[tuple[torch.Tensor, torch.Tensor]]
    test: list[tuple[torch.Tensor, torch.Tensor]]

    def __repr__(self) -> str:
        tok = sum(len(w) for w, _ in self.train)
        return (f"PosData(tagset={self.tagset}, train={len(self.train)} sentences / {tok} tokens, "
                f"dev={len(self.dev)}, test={len(self.test)}, vocab={len(self.words)}, tags={len(self.tags)})")


def encode_pos(treebank: Treebank | None = None, tagset: str = "upos", min_count: int = 2,
               train_limit: int | None = None) -> PosData:
    """Index the treebank. The word vocabulary comes from the training sentences used (the
    first ``train_limit``); the tag vocabulary from all three splits (the tag set is the
    annotation scheme's, not learned)."""
    check_choice("tagset", tagset, ("upos", "xpos"))
    check_int("train_limit", train_limit, 1, optional=True)
    tb = treebank if treebank is not None else load_ud()
    train = tb.train[:train_limit] if train_limit is not None else tb.train
    words = Vocab.build((w for s in train for w in s.words), min_count=min_count)
    tags = Vocab.build((t for split in (tb.train, tb.dev, tb.test) for s in split for t in s.tags(tagset)),
                       specials=())

    def enc(split):
        return [(torch.tensor(words.encode(s.words)), torch.tensor(tags.encode(s.tags(tagset)))) for s in split]

    return PosData(words, tags, tagset, enc(train), enc(tb.dev), enc(tb.test))


def _pad(items):
    lengths = torch.tensor([len(w) for w, _ in items])
    words = nn.utils.rnn.pad_sequence([w for w, _ in items], batch_first=True, padding_value=0)
    tags = nn.utils.rnn.pad_sequence([t for _, t in items], batch_first=True, padding_value=-100)
    return words, tags, lengths  # (B, T), (B, T) with -100 at padding, (B,)


def batches(items, batch_size: int, generator: torch.Generator | None = None):
    """Length-bucketed batches ``(words (B, T), tags (B, T), lengths (B,))``.

    With a generator: shuffle, sort by length inside pools of ``POOL`` batches, shuffle the
    batch order (training). Without: sorted by length (evaluation)."""
    if generator is None:
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
        groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        perm = torch.randperm(len(items), generator=generator).tolist()
        pool = batch_size * POOL
        groups = []
        for p in range(0, len(perm), pool):
            chunk = sorted(perm[p:p + pool], key=lambda i: len(items[i][0]))
            groups += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
    return [_pad([items[i] for i in g]) for g in groups]


class BiLSTMTagger(nn.Module):
    """Embeddings -> forward + backward ``MePropLSTM`` -> dense output layer over 2h.

    Args:
        vocab_size, n_tags: sizes; word id 0 is ``<pad>``.
        embed_dim: word embedding size (learned from scratch).
        hidden: cells per direction (the paper: 500).
        k, mode: meProp on every gate of both directions (None = dense).
        k_out: meProp on the output layer (None = dense, as the paper).
        dropout: dropout on the embeddings and on the BiLSTM output.
        sparse_embeddings: row-sparse embedding gradients (the rows looked up), for the lazy optimizers.
    """

    def __init__(self, vocab_size: int, n_tags: int, embed_dim: int = 100, hidden: int = 500, k=None,
                 mode: str = "per_example", k_out=None, dropout: float = 0.0, device=None, *,
                 sparse_embeddings: bool = False, **lstm_kwargs):
        super().__init__()
        vocab_size, n_tags, embed_dim, hidden = (check_size(name, v) for name, v in (
            ("vocab_size", vocab_size), ("n_tags", n_tags), ("embed_dim", embed_dim), ("hidden", hidden)))
        check_head_args(n_tags, k_out, dropout, device)
        check_bool("sparse_embeddings", sparse_embeddings)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0, sparse=sparse_embeddings, device=device)
        self.fwd = MePropLSTM(embed_dim, hidden, k, mode, reverse=False, device=device, **lstm_kwargs)
        self.bwd = MePropLSTM(embed_dim, hidden, k, mode, reverse=True, device=device, **lstm_kwargs)
        self.output = MePropLinear(2 * hidden, n_tags, k_out, mode, device=device)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def widths(self) -> list[int]:
        """Cells per direction [forward, backward]."""
        return [self.fwd.hidden_size, self.bwd.hidden_size]

    @property
    def lstms(self) -> list[MePropLSTM]:
        return [self.fwd, self.bwd]

    def set_k(self, k) -> None:
        self.fwd.k = k
        self.bwd.k = k

    def forward(self, words: torch.Tensor, lengths) -> torch.Tensor:
        """words (B, T) ids, lengths (B,) -> logits (B, T, n_tags) (padding rows are junk: mask them)."""
        e = self.dropout(self.embed(words))  # (B, T, E)
        hcat = torch.cat([self.fwd(e, lengths), self.bwd(e, lengths)], dim=2)  # (B, T, h_f + h_b)
        return self.output(self.dropout(hcat))


@torch.no_grad()
def tagging_accuracy(model: nn.Module, eval_batches) -> float:
    """Token accuracy over pre-built batches (``batches(items, n)``); eval mode restored."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for words, tags, lengths in eval_batches:
        words, tags = words.to(device), tags.to(device)
        pred = model(words, lengths).argmax(2)
        m = tags != -100
        correct += int((pred[m] == tags[m]).sum())
        total += int(m.sum())
    model.train(was)
    return correct / max(1, total)


def build_tagger(config, data: PosData) -> BiLSTMTagger:
    """The ``BiLSTMTagger`` a ``TrainConfig`` describes (one BiLSTM layer)."""
    hidden = one_width(config.hidden, "the POS tagger has one BiLSTM layer")
    return BiLSTMTagger(len(data.words), len(data.tags), config.embed_dim or 100, hidden, config.hidden_k,
                        config.hidden_mode, config.k_out, config.dropout, sparse_embeddings=config.lazy,
                        device=config.device, rescale=config.rescale)


class PosTask(Task):
    """POS tagging with the BiLSTM tagger: cross-entropy over the tokens, token accuracy on dev and test;
    meSimp prunes LSTM cells (``LSTMSimplifier``). The result adds ``"data"`` (the sizes and the LSTM kernel).

    ``data``: a ``PosData`` (default: UD EWT encoded with the config's tagset, min_count and train_limit)."""

    name = "pos"
    about = "BiLSTM POS tagger on UD English EWT"
    metric = "token acc."
    rows_note = "per LSTM direction [forward, backward], share of the [4h] gate-weight rows of weight_hh"

    def __init__(self, config, data: PosData | None = None):
        super().__init__(config)
        if data is None:
            data = encode_pos(tagset=config.tagset, min_count=config.min_count, train_limit=config.train_limit)
        self.data = data
        self.train_items = data.train[: config.train_limit] if config.train_limit is not None else data.train
        self.model = build_tagger(config, data).to(self.device)
        self.dev_batches, self.test_batches = batches(data.dev, 256), batches(data.test, 256)
        self.steps_per_epoch = math.ceil(len(self.train_items) / config.batch_size)
        self.stats_layers = self.model.lstms
        self.desc = f"pos {config.method}"
        if config.method == "mesimp":
            self.simplifier = LSTMSimplifier(self.model.lstms, self.model.output, config.prune_rate,
                                             config.realisation, config.record, config.count_zero_hits,
                                             config.min_units)

    def batches(self, epoch: int):
        return batches(self.train_items, self.config.batch_size, self.gen)

    def loss(self, batch) -> torch.Tensor:
        words, tags, lengths = batch
        logits = self.model(words.to(self.device), lengths)  # (B, T, n_tags)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tags.to(self.device).reshape(-1),
                               ignore_index=-100)

    def evaluate(self) -> dict:
        return {"dev_acc": self.dev_score(), "test_acc": tagging_accuracy(self.model, self.test_batches)}

    def dev_score(self) -> float:
        return tagging_accuracy(self.model, self.dev_batches)

    def row_weights(self) -> list[torch.Tensor]:
        return [lstm.weight_hh for lstm in self.model.lstms]

    def finish(self, result: dict) -> dict:
        result["meprop"]["note"] = ("per LSTM direction [forward, backward]: rows of the [4h] gate weights with a "
                                    "gradient per backward (union over the batch's tokens); multiply-adds of the "
                                    "backward products done / dense BPTT")
        result["data"] = {
            "train_sentences": len(self.train_items),
            "train_tokens": sum(len(w) for w, _ in self.train_items),
            "vocab_size": len(self.data.words),
            "tags": len(self.data.tags),
            "tagset": self.data.tagset,
            # the LSTM layers' backward (kernel="auto"): the native kernel when it builds, else PyTorch
            "lstm_kernel": fused_status() if self.config.hidden_k is not None else "dense BPTT (no top-k)",
        }
        return result
