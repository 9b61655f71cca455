"""Dependency parsing: the Chen & Manning (2014) transition-based parser on UD English EWT.

METHODS.md section 4. The meProp paper's parsing experiment is this parser (an MLP with one
hidden layer of 500 units over 48 embedded features, arc-standard system, metric UAS) on
the Penn Treebank; the suite uses Universal Dependencies English EWT instead (the PTB is
not freely redistributable), so the numbers are a comparison, not a target.

The pieces, each a documented choice:

- **Arc-standard system** (Nivre 2004, as Chen & Manning use it). A configuration is a
  stack (token 0 = ROOT at the bottom), a buffer (the words not yet read, in order) and
  the arcs built so far. Transitions, with s1 the stack top, s2 the one below it, b1 the
  buffer front:
    SHIFT          move b1 onto the stack                  (buffer not empty)
    LEFT(label)    arc s1 -> s2 with label, pop s2          (s2 is not ROOT)
    RIGHT(label)   arc s2 -> s1 with label, pop s1          (stack >= 2; s2 = ROOT only
                                                            when the buffer is empty)
  The last condition makes every decoded tree have exactly one word attached to ROOT
  (UD's rule). The parser's greedy decoding only ever takes a *legal* transition (the
  illegal ones are masked out of the scores), so its output is always a well-formed,
  projective tree. Transition ids: 0 = SHIFT, 1..R = LEFT(label), R+1..2R = RIGHT(label)
  for the R dependency labels seen in training.
- **Static oracle**: LEFT if s2's gold head is s1; RIGHT if s1's gold head is s2 and all
  of s1's gold dependents are attached already; SHIFT otherwise. It reproduces exactly
  the projective trees, so training uses the **projective training sentences only**
  (``is_projective``; the number skipped is reported). Evaluation uses **all** dev/test
  sentences.
- **Features** (Chen & Manning's 48, ``FEATURE_NAMES``): the words at 18 positions
  (s1..s3, b1..b3, the first/second leftmost and rightmost children of s1 and s2, and the
  leftmost-of-leftmost / rightmost-of-rightmost children of s1 and s2), the POS tags of the
  same 18 positions and the arc labels of the 12 child positions. lc1(x) is x's leftmost
  child (index < x), lc2(x) the second leftmost, rc1/rc2 the rightmost ones.
  Each vocabulary has the special entries ``<pad>``, ``<unk>``, ``<null>`` (no token at
  this position) and ``<root>`` (the ROOT token).
- **Words**: the FORM column as written (case kept; Chen & Manning used pre-trained
  embeddings, the suite learns them from scratch). Unknown-word policy: training words
  seen fewer than ``min_count`` times become ``<unk>`` (``ud.Vocab``), so the model learns
  an ``<unk>`` embedding that it uses for every unseen word.
- **POS tags**: the *gold* tags of the treebank (UPOS by default, XPOS = Penn Treebank
  tags with ``tagset="xpos"``); Chen & Manning used predicted tags (Stanford tagger), so
  our scores are somewhat optimistic for that reason.
- **Labels**: the full UD DEPREL (with subtypes such as ``nmod:poss``).
- **Model** (``ParserModel``): word/tag/label embeddings (50 dimensions by default),
  concatenated (48 x 50 = 2,400 inputs), one hidden ``MePropLinear`` (500 units), the
  cube activation x^3 (Chen & Manning; ``relu`` as an option), an output layer over the
  transitions. ``model.hidden`` / ``model.output`` / ``model.widths`` are the same
  interface as the MNIST ``MLP``, so ``mesimp.Simplifier`` prunes the hidden layer as is.
- **Metric**: UAS (head correct) and LAS (head and label correct) over the non-punctuation
  words (``ud.punct_mask``: UPOS PUNCT or a PTB punctuation XPOS), as usual for English.

Speed: the oracle and the feature extraction run on numpy arrays for all sentences at
once (``BatchedStates``): all ~400,000 training configurations of EWT take about a second
or two. Decoding is batched the same way: one model call per step for all unfinished
sentences. ``Configuration`` / ``oracle`` / ``extract_features`` are the same logic written
plainly, one configuration at a time, for reading and stepping through (notebook 08); the
tests check the two agree.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..meprop import MePropLinear
from ..validate import check_bool, check_choice, check_float, check_size
from .mnist import check_head_args
from .ud import PAD, UNK, Sentence, Treebank, Vocab, load_ud, punct_mask

__all__ = [
    "ACTIVATIONS",
    "FEATURE_NAMES",
    "LEFT",
    "NULL",
    "RIGHT",
    "ROOT",
    "SHIFT",
    "BatchedStates",
    "Configuration",
    "ParserModel",
    "ParserVocab",
    "attachment_scores",
    "build_parser_model",
    "extract_features",
    "feature_tokens",
    "is_projective",
    "oracle",
    "oracle_steps",
    "parse",
    "precompute",
    "train_parse",
]

NULL, ROOT = "<null>", "<root>"
SPECIALS = (PAD, UNK, NULL, ROOT)  # the first entries of every parser vocabulary, in this order
SHIFT, LEFT, RIGHT = "SHIFT", "LEFT", "RIGHT"
ACTIVATIONS = ("cube", "relu")

_POSITIONS = [
    "s1", "s2", "s3", "b1", "b2", "b3",
    "lc1(s1)", "rc1(s1)", "lc2(s1)", "rc2(s1)",
    "lc1(s2)", "rc1(s2)", "lc2(s2)", "rc2(s2)",
    "lc1(lc1(s1))", "rc1(rc1(s1))", "lc1(lc1(s2))", "rc1(rc1(s2))",
]  # fmt: skip
# 18 word features, 18 POS features, 12 label features (of the child positions 6..17)
FEATURE_NAMES = [f"w:{p}" for p in _POSITIONS] + [f"t:{p}" for p in _POSITIONS] + [f"l:{p}" for p in _POSITIONS[6:]]
N_FEATURES = len(FEATURE_NAMES)  # 48


# ----------------------------------------------------------------------------- trees


def is_projective(heads) -> bool:
    """True if the tree has no crossing arcs (ROOT = token 0 counts as a word to the left).

    ``heads[i]`` is the head of word i + 1 (0 = ROOT), as in ``Sentence.heads``. Two arcs
    (a, b) and (c, d) (sorted ends) cross if a < c < b < d.
    """
    heads = list(heads)
    n = len(heads)
    if any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or not 0 <= h <= n for h in heads):
        raise ValueError(f"heads={heads!r}: every head must be an int in 0..{n}")
    h = np.asarray(heads, dtype=np.int64)
    d = np.arange(1, n + 1)
    a, b = np.minimum(h, d), np.maximum(h, d)  # each arc's left and right end
    cross = (a[:, None] < a[None, :]) & (a[None, :] < b[:, None]) & (b[:, None] < b[None, :])
    return not bool(cross.any())


# ----------------------------------------------------------------------------- vocabularies


@dataclass
class ParserVocab:
    """Word, tag and label vocabularies (each starts with ``SPECIALS``) and the transitions.

    ``relations`` are the dependency labels seen in training (most frequent first); the
    transitions are SHIFT, LEFT(r) and RIGHT(r) for each of them.
    """

    words: Vocab
    tags: Vocab
    labels: Vocab
    tagset: str = "upos"

    @classmethod
    def build(cls, sentences, min_count: int = 2, tagset: str = "upos") -> "ParserVocab":
        check_choice("tagset", tagset, ("upos", "xpos"))
        words = Vocab.build((w for s in sentences for w in s.words), min_count, specials=SPECIALS)
        tags = Vocab.build((t for s in sentences for t in s.tags(tagset)), 1, specials=SPECIALS)
        labels = Vocab.build((d for s in sentences for d in s.deprels), 1, specials=SPECIALS)
        return cls(words, tags, labels, tagset)

    @property
    def relations(self) -> list[str]:
        return self.labels.itos[len(SPECIALS):]

    @property
    def n_transitions(self) -> int:
        return 1 + 2 * len(self.relations)

    def transition_id(self, transition: tuple) -> int:
        """``("SHIFT", None)`` -> 0, ``("LEFT", r)`` -> 1 + i, ``("RIGHT", r)`` -> 1 + R + i."""
        kind, label = transition
        if kind == SHIFT:
            return 0
        i = self.labels.stoi.get(label, -1) - len(SPECIALS)
        if kind not in (LEFT, RIGHT) or i < 0:
            raise ValueError(f"transition={transition!r} is not one of this vocabulary's transitions")
        return 1 + i + (len(self.relations) if kind == RIGHT else 0)

    def transition(self, tid: int) -> tuple:
        """The inverse of ``transition_id``."""
        r = len(self.relations)
        if not 0 <= tid <= 2 * r:
            raise ValueError(f"transition id {tid} is outside 0..{2 * r}")
        if tid == 0:
            return (SHIFT, None)
        return (LEFT if tid <= r else RIGHT, self.relations[(tid - 1) % r])

    def encode(self, sentence: Sentence) -> tuple[np.ndarray, np.ndarray]:
        """Word and tag ids of tokens 0..n (token 0 = ``<root>``)."""
        root = SPECIALS.index(ROOT)
        w = np.array([root] + self.words.encode(sentence.words), dtype=np.int64)
        t = np.array([root] + self.tags.encode(sentence.tags(self.tagset)), dtype=np.int64)
        return w, t

    def __repr__(self) -> str:
        return (f"ParserVocab(words={len(self.words)}, tags={len(self.tags)} ({self.tagset}), "
                f"labels={len(self.relations)}, transitions={self.n_transitions})")


# ----------------------------------------------------------------------------- one configuration, plainly


class Configuration:
    """One arc-standard configuration, written for reading (see ``BatchedStates`` for speed).

    ``stack``: token ids, top last (0 = ROOT); ``buffer``: word ids still to read, front
    first; ``heads[i]`` / ``labels[i]``: the arc built for token i (-1 / None: none yet).
    """

    def __init__(self, n: int):
        self.n = n
        self.stack = [0]
        self.buffer = list(range(1, n + 1))
        self.heads = [-1] * (n + 1)
        self.labels: list[str | None] = [None] * (n + 1)

    @property
    def arcs(self) -> list[tuple[int, int, str]]:
        """(head, dependent, label) of the arcs built so far, by dependent."""
        return [(h, d, self.labels[d]) for d, h in enumerate(self.heads) if h >= 0]

    def legal(self) -> dict[str, bool]:
        """Which transition kinds may be applied now."""
        two = len(self.stack) >= 2
        return {
            SHIFT: bool(self.buffer),
            LEFT: two and self.stack[-2] != 0,
            RIGHT: two and (self.stack[-2] != 0 or not self.buffer),
        }

    def is_terminal(self) -> bool:
        return not self.buffer and self.stack == [0]

    def apply(self, transition: tuple) -> None:
        """Apply ``(kind, label)``; a ``ValueError`` if it is not legal here."""
        kind, label = transition
        if not self.legal().get(kind, False):
            raise ValueError(f"{kind} is not legal in this configuration (stack {self.stack}, buffer {self.buffer})")
        if kind == SHIFT:
            self.stack.append(self.buffer.pop(0))
            return
        s1, s2 = self.stack[-1], self.stack[-2]
        head, dep = (s1, s2) if kind == LEFT else (s2, s1)
        self.heads[dep], self.labels[dep] = head, label
        self.stack.remove(dep)

    def left_child(self, i: int, nth: int = 1) -> int:
        """The nth leftmost child of token i (children left of i only); -1 if none."""
        kids = sorted(d for d, h in enumerate(self.heads) if h == i and d < i) if i >= 0 else []
        return kids[nth - 1] if len(kids) >= nth else -1

    def right_child(self, i: int, nth: int = 1) -> int:
        """The nth rightmost child of token i (children right of i only); -1 if none."""
        kids = sorted((d for d, h in enumerate(self.heads) if h == i and d > i), reverse=True) if i >= 0 else []
        return kids[nth - 1] if len(kids) >= nth else -1

    def __repr__(self) -> str:
        more = "..." if len(self.buffer) > 6 else ""
        return f"Configuration(stack={self.stack}, buffer={self.buffer[:6]}{more}, arcs={len(self.arcs)})"


def oracle(config: Configuration, gold_heads, gold_labels) -> tuple:
    """The static arc-standard oracle: the gold transition in ``config``.

    ``gold_heads`` / ``gold_labels`` are ``Sentence.heads`` / ``Sentence.deprels`` (word i + 1
    at index i). Correct for projective trees only.
    """
    if len(config.stack) >= 2:
        s1, s2 = config.stack[-1], config.stack[-2]
        if s2 != 0 and gold_heads[s2 - 1] == s1:
            return (LEFT, gold_labels[s2 - 1])
        done = all(config.heads[d] == s1 for d, h in enumerate(gold_heads, start=1) if h == s1)
        if gold_heads[s1 - 1] == s2 and done:
            return (RIGHT, gold_labels[s1 - 1])
    return (SHIFT, None)


def feature_tokens(config: Configuration) -> list[int]:
    """The 18 token positions of the features, in ``FEATURE_NAMES`` order (-1 = none)."""
    st, buf = config.stack, config.buffer
    s = [st[-i] if len(st) >= i else -1 for i in (1, 2, 3)]
    b = [buf[i] if len(buf) > i else -1 for i in (0, 1, 2)]
    lc, rc = config.left_child, config.right_child
    out = s + b
    for x in s[:2]:
        out += [lc(x, 1), rc(x, 1), lc(x, 2), rc(x, 2)]
    for x in s[:2]:
        out += [lc(lc(x, 1), 1), rc(rc(x, 1), 1)]
    return out


def extract_features(config: Configuration, sentence: Sentence, vocab: ParserVocab) -> list[int]:
    """The 48 feature indices of ``config`` (``FEATURE_NAMES`` order): 18 word ids, 18 tag
    ids, 12 label ids. No token -> ``<null>``; token 0 -> ``<root>``."""
    null = SPECIALS.index(NULL)
    words, tags = vocab.encode(sentence)
    toks = feature_tokens(config)
    w = [null if t < 0 else int(words[t]) for t in toks]
    p = [null if t < 0 else int(tags[t]) for t in toks]
    lab = [null if t < 0 or config.labels[t] is None else vocab.labels.index(config.labels[t]) for t in toks[6:]]
    return w + p + lab


def oracle_steps(sentence: Sentence, vocab: ParserVocab | None = None) -> list[dict]:
    """Step through one (projective) sentence with the oracle.

    Returns one dict per transition: ``stack`` and ``buffer`` before it, the
    ``transition`` taken, and (with a ``vocab``) the 48 ``features`` the parser sees there.
    """
    if not is_projective(sentence.heads):
        raise ValueError("oracle_steps: this sentence is not projective; the static oracle cannot rebuild it")
    config = Configuration(len(sentence))
    steps = []
    while not config.is_terminal():
        t = oracle(config, sentence.heads, sentence.deprels)
        step = {"stack": list(config.stack), "buffer": list(config.buffer), "transition": t}
        if vocab is not None:
            step["features"] = extract_features(config, sentence, vocab)
        steps.append(step)
        config.apply(t)
    return steps


# ----------------------------------------------------------------------------- many configurations, fast


class BatchedStates:
    """Arc-standard configurations of many sentences at once, as numpy arrays.

    Token columns 0..L (L = longest sentence) plus one column ``none`` = L + 1 that stands
    for "no token" (its word/tag/label are ``<null>``, its children are ``none``), so every
    feature is a plain gather. The buffer is always the words ``bp..n``; the stack is an
    array with a size ``sp``. In arc-standard a new left child is always the leftmost one
    so far and a new right child the rightmost, so ``lc1/lc2/rc1/rc2`` are updated by
    pushing (checked against ``Configuration`` in the tests).
    """

    def __init__(self, sentences: list[Sentence], vocab: ParserVocab, gold: bool = False):
        self.vocab = vocab
        self.sentences = sentences
        b = len(sentences)
        self.n = np.array([len(s) for s in sentences], dtype=np.int64)
        L = int(self.n.max()) if b else 0
        self.none = none = L + 1
        null = SPECIALS.index(NULL)
        self.word = np.full((b, L + 2), null, dtype=np.int64)
        self.tag = np.full((b, L + 2), null, dtype=np.int64)
        for i, s in enumerate(sentences):
            w, t = vocab.encode(s)
            self.word[i, : len(w)], self.tag[i, : len(t)] = w, t
        self.label = np.full((b, L + 2), null, dtype=np.int64)  # label id of each token's arc
        self.head = np.full((b, L + 2), -1, dtype=np.int64)
        self.lc1, self.lc2, self.rc1, self.rc2 = (np.full((b, L + 2), none, dtype=np.int64) for _ in range(4))
        self.stack = np.zeros((b, L + 1), dtype=np.int64)
        self.sp = np.ones(b, dtype=np.int64)  # stack = [ROOT]
        self.bp = np.ones(b, dtype=np.int64)  # buffer = words bp..n
        self.n_rel = len(vocab.relations)
        if gold:  # for the oracle: gold heads / label ids, gold and attached child counts
            self.gold_head = np.full((b, L + 2), -2, dtype=np.int64)
            self.gold_label = np.full((b, L + 2), null, dtype=np.int64)
            self.gold_kids = np.zeros((b, L + 2), dtype=np.int64)
            for i, s in enumerate(sentences):
                self.gold_head[i, 1 : len(s) + 1] = s.heads
                self.gold_label[i, 1 : len(s) + 1] = vocab.labels.encode(s.deprels)
                np.add.at(self.gold_kids[i], s.heads, 1)
            self.kids = np.zeros((b, L + 2), dtype=np.int64)

    def _top(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sp, none = self.sp[r], self.none
        s = [np.where(sp >= i, self.stack[r, np.maximum(sp - i, 0)], none) for i in (1, 2, 3)]
        return s[0], s[1], s[2]

    def terminal(self, r: np.ndarray) -> np.ndarray:
        return (self.sp[r] == 1) & (self.bp[r] > self.n[r])

    def legal(self, r: np.ndarray) -> np.ndarray:
        """(len(r), n_transitions) bool: which transitions are legal."""
        s1, s2, _ = self._top(r)
        buf = self.bp[r] <= self.n[r]
        two = self.sp[r] >= 2
        left = two & (s2 != 0)
        right = two & ((s2 != 0) | ~buf)
        m = np.empty((len(r), 1 + 2 * self.n_rel), dtype=bool)
        m[:, 0] = buf
        m[:, 1 : 1 + self.n_rel] = left[:, None]
        m[:, 1 + self.n_rel :] = right[:, None]
        return m

    def positions(self, r: np.ndarray) -> np.ndarray:
        """(len(r), 18) token positions of the features (``none`` = no token)."""
        s1, s2, s3 = self._top(r)
        bp, n, none = self.bp[r], self.n[r], self.none
        b = [np.where(bp + i <= n, bp + i, none) for i in (0, 1, 2)]
        rr = r
        lc1, rc1, lc2, rc2 = self.lc1, self.rc1, self.lc2, self.rc2
        cols = [s1, s2, s3, *b]
        for x in (s1, s2):
            cols += [lc1[rr, x], rc1[rr, x], lc2[rr, x], rc2[rr, x]]
        for x in (s1, s2):
            cols += [lc1[rr, lc1[rr, x]], rc1[rr, rc1[rr, x]]]
        return np.stack(cols, axis=1)

    def features(self, r: np.ndarray) -> np.ndarray:
        """(len(r), 48) feature indices, ``FEATURE_NAMES`` order."""
        p = self.positions(r)
        rr = r[:, None]
        return np.concatenate([self.word[rr, p], self.tag[rr, p], self.label[rr, p[:, 6:]]], axis=1)

    def oracle(self, r: np.ndarray) -> np.ndarray:
        """The static oracle's transition ids (needs ``gold=True``)."""
        s1, s2, _ = self._top(r)
        two = self.sp[r] >= 2
        left = two & (s2 != 0) & (self.gold_head[r, s2] == s1)
        right = two & (self.gold_head[r, s1] == s2) & (self.kids[r, s1] == self.gold_kids[r, s1])
        base = len(SPECIALS) - 1
        return np.where(left, self.gold_label[r, s2] - base,
                        np.where(right, self.gold_label[r, s1] - base + self.n_rel, 0))

    def apply(self, r: np.ndarray, t: np.ndarray) -> None:
        """Apply transition ids ``t`` to the sentences ``r`` (legality is the caller's job)."""
        s1, s2, _ = self._top(r)
        label = (t - 1) % max(1, self.n_rel) + len(SPECIALS)
        sh, lf, rt = t == 0, (t >= 1) & (t <= self.n_rel), t > self.n_rel
        # SHIFT
        a = r[sh]
        self.stack[a, self.sp[a]] = self.bp[a]
        self.sp[a] += 1
        self.bp[a] += 1
        # LEFT: s1 -> s2, pop s2 (s1 moves down one place)
        a, h, d = r[lf], s1[lf], s2[lf]
        self.head[a, d], self.label[a, d] = h, label[lf]
        self.lc2[a, h] = self.lc1[a, h]
        self.lc1[a, h] = d
        self.stack[a, self.sp[a] - 2] = h
        self.sp[a] -= 1
        # RIGHT: s2 -> s1, pop s1
        a, h, d = r[rt], s2[rt], s1[rt]
        self.head[a, d], self.label[a, d] = h, label[rt]
        self.rc2[a, h] = self.rc1[a, h]
        self.rc1[a, h] = d
        self.sp[a] -= 1
        if hasattr(self, "kids"):
            np.add.at(self.kids, (r[~sh], np.where(lf, s1, s2)[~sh]), 1)

    def result(self) -> tuple[list[list[int]], list[list[str]]]:
        """Heads and labels of words 1..n of every sentence (-1 / None where unattached)."""
        itos = self.vocab.labels.itos
        heads = [self.head[i, 1 : n + 1].tolist() for i, n in enumerate(self.n)]
        labels = [[itos[x] if h >= 0 else None for x, h in zip(self.label[i, 1 : n + 1], hh)]
                  for i, (n, hh) in enumerate(zip(self.n, heads))]
        return heads, labels


def precompute(sentences: list[Sentence], vocab: ParserVocab) -> tuple[np.ndarray, np.ndarray, BatchedStates]:
    """Run the oracle on all (projective) ``sentences`` at once.

    Returns ``features`` (T, 48) int32, ``transitions`` (T,) int64 (one row per training
    configuration, 2n per sentence of n words) and the final states (whose ``result()``
    equals the gold trees for projective sentences).
    """
    states = BatchedStates(sentences, vocab, gold=True)
    feats, gold = [], []
    active = np.arange(len(sentences))
    while active.size:
        t = states.oracle(active)
        ok = states.legal(active)[np.arange(active.size), t]
        if not ok.all():
            bad = sentences[int(active[~ok][0])]
            raise ValueError(f"precompute: the oracle is stuck on sentence {bad.sent_id!r} (line {bad.line}): "
                             "is it projective?")
        feats.append(states.features(active).astype(np.int32))
        gold.append(t)
        states.apply(active, t)
        active = active[~states.terminal(active)]
    if not feats:
        return np.zeros((0, N_FEATURES), np.int32), np.zeros(0, np.int64), states
    return np.concatenate(feats), np.concatenate(gold), states


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
        self.vocab: ParserVocab | None = None  # set by build_parser_model / train_parse (for ``parse``)

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
    hidden = config.hidden
    if isinstance(hidden, list):
        if len(hidden) != 1:
            raise ValueError(f"hidden={hidden!r}: the parser has one hidden layer; give one width")
        hidden = hidden[0]
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


# ----------------------------------------------------------------------------- training


def train_parse(config, data: Treebank | None = None, progress: bool = True, on_eval=None,
                return_model: bool = False) -> dict:
    """Train the parser as ``config`` (a ``TrainConfig`` with task="parse") says.

    Called by ``training.train``. Precomputes the (features, gold transition) pairs of the
    projective training sentences once, then trains on shuffled minibatches of
    configurations exactly like the MNIST loop (same optimizers, grad clip, timings, meSimp
    cycle schedule). Dev UAS at each evaluation; the reported test UAS is the one at the
    best dev point. The result has the keys of ``training.fit`` plus ``test_las``,
    ``metric`` and ``data``.
    """
    # training sits above tasks; imported here so that the tasks layer does not need it at import
    from ..mesimp import Simplifier
    from ..training import fit, shuffled_batches

    if config.task != "parse":
        raise ValueError(f"task={config.task!r}: train_parse trains task='parse'")
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    data = data if data is not None else load_ud()

    train_sents = data.train if config.train_limit is None else data.train[: config.train_limit]
    vocab = ParserVocab.build(train_sents, config.min_count, config.tagset)
    t0 = time.perf_counter()
    projective = [s for s in train_sents if is_projective(s.heads)]
    feats_np, gold_np, _ = precompute(projective, vocab)
    precompute_s = time.perf_counter() - t0
    train_x = torch.from_numpy(feats_np).to(device)
    train_y = torch.from_numpy(gold_np).to(device)

    model = build_parser_model(config, vocab).to(device)
    n = len(train_y)
    if n == 0:
        raise ValueError(f"train_limit={config.train_limit}: no projective training sentence to train on")
    steps_per_epoch = math.ceil(n / config.batch_size)
    hidden = list(model.hidden)

    def scores():
        dev, test = evaluate(model, data.dev, vocab), evaluate(model, data.test, vocab)
        return {"dev_acc": dev["uas"], "test_acc": test["uas"], "dev_las": dev["las"], "test_las": test["las"]}

    simp = None
    if config.method == "mesimp":
        simp = Simplifier(model, config.prune_rate, config.realisation, config.record, config.count_zero_hits,
                          config.min_units)
    result = fit(
        config, model, epoch_batches=lambda _epoch: shuffled_batches(n, config.batch_size, gen, device),
        steps_per_epoch=steps_per_epoch, loss_fn=lambda idx: F.cross_entropy(model(train_x[idx]), train_y[idx]), evaluate=scores,
        prune_score=lambda: evaluate(model, data.dev, vocab)["uas"], simplifier=simp,
        row_weights=lambda: [layer.weight for layer in hidden], stats_layers=hidden, progress=progress,
        on_eval=on_eval, return_model=return_model, desc=f"parse {config.method}",
    )
    best = next(p for p in result["history"] if p["step"] == result["best_step"])
    result["timing"]["precompute_s"] = round(precompute_s, 3)
    result.update(
        metric="UAS/LAS excluding punctuation, gold POS tags",
        test_las=best["test_las"],
        data={
            "train_sentences": len(train_sents),
            "projective_used": len(projective),
            "skipped_nonprojective": len(train_sents) - len(projective),
            "train_transitions": n,
            "dev_sentences": len(data.dev),
            "test_sentences": len(data.test),
        },
    )
    return result
