"""Dependency parsing: the Chen & Manning (2014) transition-based parser on UD English EWT.

METHODS.md section 4. The meProp paper's parsing experiment is this parser (an MLP with one
hidden layer of 500 units over 48 embedded features, arc-standard system, metric UAS) on
the Penn Treebank; the suite uses Universal Dependencies English EWT instead (the PTB is
not freely redistributable), so the numbers are a comparison, not a target.

- **Model** (``ParserModel``): word/tag/label embeddings (50 dimensions by default),
  concatenated (48 x 50 = 2,400 inputs), one hidden ``MePropLinear`` (500 units), the
  cube activation x^3 (Chen & Manning; ``relu`` as an option), an output layer over the
  transitions. ``model.hidden`` / ``model.output`` / ``model.widths`` are the same
  interface as the MNIST ``MLP``, so ``mesimp.Simplifier`` prunes the hidden layer as is.
- **Metric**: UAS (head correct) and LAS (head and label correct) over the non-punctuation
  words (``ud.punct_mask``: UPOS PUNCT or a PTB punctuation XPOS), as usual for English.

Where the pieces live: ``arc_standard.py`` (the transition system, the static oracle, the
48 features, the vocabularies; every choice documented there), ``parser_states.py`` (the
same on numpy arrays for all sentences at once), this file (the model, greedy decoding,
UAS/LAS and the ``ParseTask``). Their names stay importable from here.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..meprop import MePropLinear
from ..mesimp import Simplifier
from ..validate import check_bool, check_choice, check_float, check_size
from .arc_standard import (FEATURE_NAMES, LEFT, N_FEATURES, NULL, RIGHT, ROOT, SHIFT, SPECIALS, Configuration,
                           ParserVocab, extract_features, feature_tokens, is_projective, oracle, oracle_steps)
from .base import Task, check_head_args, one_width, shuffled_batches
from .parser_states import BatchedStates, precompute
from .ud import Sentence, Treebank, load_ud, punct_mask

__all__ = [
    "ACTIVATIONS",
    "FEATURE_NAMES",
    "LEFT",
    "N_FEATURES",
    "NULL",
    "RIGHT",
    "ROOT",
    "SHIFT",
    "SPECIALS",
    "BatchedStates",
    "Configuration",
    "ParseTask",
    "ParserModel",
    "ParserVocab",
    "attachment_scores",
    "build_parser_model",
    "evaluate",
    "extract_features",
    "feature_tokens",
    "is_projective",
    "oracle",
    "oracle_steps",
    "parse",
    "precompute",
]

ACTIVATIONS = ("cube", "relu")


# ----------------------------------------------------------------------------- the model


class ParserModel(nn.Module):
    """Chen & Manning's MLP: 48 embedded features -> one hidden ``MePropLinear`` -> cube
    (or relu) -> output layer over the transitions.

    Args:
        n_words, n_tags, n_labels: vocabulary sizes; n_transitions: 1 + 2 x labels.
        embed_dim: embedding size of words, tags and labels (Chen & Manning: 50).
        hidden: hidden width (500); k, mode: meProp on the hidden layer (None = dense).
        k_out: meProp on the output layer (None = dense, as the paper).
        activation: "cube" (x^3, Chen & Manning) or "relu".
        dropout: dropout after the activation (Chen & Manning: 0.5; default 0).
        embed_std: standard deviation of the initial embeddings (see below).
        **layer_kwargs: passed to both ``MePropLinear`` (rescale, weight_grad, ...).

    Initialisation: embeddings N(0, ``embed_std``^2) with ``embed_std=0.1`` (Chen & Manning
    started from pre-trained word vectors; measured on 3,000 sentences x 2 epochs, dense, cube:
    dev UAS 81.4 at 0.1 against 75.4 at ``nn.Embedding``'s 1.0, whose cubed activations made the
    loss blow up, and 80.1 at 0.01), linear layers as ``nn.Linear``.
    ``hidden`` / ``output`` / ``widths`` match ``mesimp_lib.MLP``, so ``Simplifier`` works.
    """

    def __init__(self, n_words: int, n_tags: int, n_labels: int, n_transitions: int, embed_dim: int = 50,
                 hidden: int = 500, k=None, mode: str = "per_example", k_out=None, activation: str = "cube",
                 dropout: float = 0.0, embed_std: float = 0.1, device=None, *, sparse_embeddings: bool = False,
                 **layer_kwargs):
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS)
        n_words, n_tags, n_labels, n_transitions, embed_dim, hidden = (check_size(name, v) for name, v in (
            ("n_words", n_words), ("n_tags", n_tags), ("n_labels", n_labels), ("n_transitions", n_transitions),
            ("embed_dim", embed_dim), ("hidden", hidden)))
        check_head_args(n_transitions, k_out, dropout, device)
        check_float("embed_std", embed_std, 0.0)
        check_bool("sparse_embeddings", sparse_embeddings)
        self.activation = activation
        # sparse_embeddings: row-sparse gradients of the rows looked up (for the lazy optimizers)
        self.word_embed = nn.Embedding(n_words, embed_dim, sparse=sparse_embeddings, device=device)
        self.tag_embed = nn.Embedding(n_tags, embed_dim, sparse=sparse_embeddings, device=device)
        self.label_embed = nn.Embedding(n_labels, embed_dim, sparse=sparse_embeddings, device=device)
        for emb in (self.word_embed, self.tag_embed, self.label_embed):
            nn.init.normal_(emb.weight, 0.0, embed_std)
        first = MePropLinear(N_FEATURES * embed_dim, hidden, k, mode, device=device, **layer_kwargs)
        self.hidden = nn.ModuleList([first])
        self.output = MePropLinear(hidden, n_transitions, k_out, mode, device=device, **layer_kwargs)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.vocab: ParserVocab | None = None  # set by build_parser_model (for ``parse``)

    @property
    def widths(self) -> list[int]:
        return [layer.out_features for layer in self.hidden]

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, 48) feature indices -> (B, n_transitions) scores."""
        feats = feats.long()
        x = torch.cat([self.word_embed(feats[:, :18]), self.tag_embed(feats[:, 18:36]),
                       self.label_embed(feats[:, 36:])], dim=1)  # (B, 48, d)
        y = self.hidden[0](x.flatten(1))  # (B, hidden)
        h = y * y * y if self.activation == "cube" else torch.relu(y)
        return self.output(self.dropout(h))  # (B, T)


def build_parser_model(config, vocab: ParserVocab) -> ParserModel:
    """The ``ParserModel`` a ``TrainConfig`` describes (one hidden layer; ``layers`` is not
    used: Chen & Manning's parser has one)."""
    hidden = one_width(config.hidden, "the parser has one hidden layer")
    model = ParserModel(
        len(vocab.words), len(vocab.tags), len(vocab.labels), vocab.n_transitions,
        embed_dim=config.embed_dim or 50, hidden=hidden, k=config.hidden_k, mode=config.hidden_mode,
        k_out=config.k_out, activation=config.activation or "cube", dropout=config.dropout,
        rescale=config.rescale, weight_grad=config.weight_grad, kernel=config.kernel, device=config.device,
        sparse_embeddings=config.lazy,
    )
    model.vocab = vocab
    return model


# ----------------------------------------------------------------------------- decoding and the metric


@torch.no_grad()
def parse(model: ParserModel, sentences: list[Sentence], vocab: ParserVocab | None = None
          ) -> tuple[list[list[int]], list[list[str]]]:
    """Greedy decoding of all ``sentences`` at once: one model call per step for every
    unfinished sentence, illegal transitions masked. Returns (heads, labels) per sentence;
    always a projective tree with one word attached to ROOT."""
    vocab = vocab if vocab is not None else model.vocab
    if vocab is None:
        raise ValueError("vocab=None and the model has no .vocab: pass the ParserVocab it was trained with")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    states = BatchedStates(sentences, vocab)
    active = np.arange(len(sentences))
    while active.size:
        scores = model(torch.from_numpy(states.features(active)).to(device))  # (m, T)
        legal = torch.from_numpy(states.legal(active)).to(device)
        t = scores.masked_fill(~legal, -math.inf).argmax(1).cpu().numpy()
        states.apply(active, t)
        active = active[~states.terminal(active)]
    model.train(was_training)
    return states.result()


def attachment_scores(sentences: list[Sentence], heads, labels) -> dict:
    """UAS and LAS over the non-punctuation words (``ud.punct_mask``).

    Returns {"uas", "las", "words"} (shares in [0, 1] and the number of words scored).
    """
    total = uas = las = 0
    for s, hh, ll in zip(sentences, heads, labels, strict=True):
        for gh, gl, ph, pl, p in zip(s.heads, s.deprels, hh, ll, punct_mask(s)):
            if p:
                continue
            total += 1
            if gh == ph:
                uas += 1
                las += gl == pl
    return {"uas": uas / max(1, total), "las": las / max(1, total), "words": total}


def evaluate(model: ParserModel, sentences: list[Sentence], vocab: ParserVocab | None = None) -> dict:
    """``attachment_scores`` of the model's greedy parses."""
    heads, labels = parse(model, sentences, vocab)
    return attachment_scores(sentences, heads, labels)


# ----------------------------------------------------------------------------- the task


class ParseTask(Task):
    """Parsing with Chen & Manning's parser: the (features, gold transition) pairs of the projective
    training sentences are precomputed once, then trained on as shuffled minibatches of configurations
    (cross-entropy over the transitions); dev UAS at each evaluation, test UAS (and LAS) at the best dev
    point. The result adds ``test_las``, ``metric``, ``data`` and ``timing.precompute_s``.

    ``data``: a ``ud.Treebank`` (default: the shipped UD English EWT)."""

    name = "parse"
    about = "Chen & Manning dependency parser on UD English EWT"
    metric = "UAS"

    def __init__(self, config, data: Treebank | None = None):
        super().__init__(config)
        self.data = data = data if data is not None else load_ud()
        self.train_sents = data.train if config.train_limit is None else data.train[: config.train_limit]
        self.vocab = ParserVocab.build(self.train_sents, config.min_count, config.tagset)
        t0 = time.perf_counter()
        self.projective = [s for s in self.train_sents if is_projective(s.heads)]
        feats_np, gold_np, _ = precompute(self.projective, self.vocab)
        self.precompute_s = time.perf_counter() - t0
        self.train_x = torch.from_numpy(feats_np).to(self.device)  # (T, 48)
        self.train_y = torch.from_numpy(gold_np).to(self.device)  # (T,)
        self.model = build_parser_model(config, self.vocab).to(self.device)
        if len(self.train_y) == 0:
            raise ValueError(f"train_limit={config.train_limit}: no projective training sentence to train on")
        self.steps_per_epoch = math.ceil(len(self.train_y) / config.batch_size)
        self.stats_layers = list(self.model.hidden)
        self.desc = f"parse {config.method}"
        if config.method == "mesimp":
            self.simplifier = Simplifier(self.model, config.prune_rate, config.realisation, config.record,
                                         config.count_zero_hits, config.min_units)

    def batches(self, epoch: int):
        return shuffled_batches(len(self.train_y), self.config.batch_size, self.gen, self.device)

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(self.train_x[idx]), self.train_y[idx])

    def evaluate(self) -> dict:
        dev = evaluate(self.model, self.data.dev, self.vocab)
        test = evaluate(self.model, self.data.test, self.vocab)
        return {"dev_acc": dev["uas"], "test_acc": test["uas"], "dev_las": dev["las"], "test_las": test["las"]}

    def dev_score(self) -> float:
        return evaluate(self.model, self.data.dev, self.vocab)["uas"]

    def finish(self, result: dict) -> dict:
        best = next(p for p in result["history"] if p["step"] == result["best_step"])
        result["timing"]["precompute_s"] = round(self.precompute_s, 3)
        result.update(
            metric="UAS/LAS excluding punctuation, gold POS tags",
            test_las=best["test_las"],
            data={
                "train_sentences": len(self.train_sents),
                "projective_used": len(self.projective),
                "skipped_nonprojective": len(self.train_sents) - len(self.projective),
                "train_transitions": len(self.train_y),
                "dev_sentences": len(self.data.dev),
                "test_sentences": len(self.data.test),
            },
        )
        return result
