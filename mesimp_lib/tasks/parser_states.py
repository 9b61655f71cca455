"""The arc-standard system for many sentences at once, on numpy arrays: training data and decoding, fast.

Speed: the oracle and the feature extraction run on numpy arrays for all sentences at
once (``BatchedStates``): all ~400,000 training configurations of EWT take about a second
or two. Decoding is batched the same way: one model call per step for all unfinished
sentences. ``Configuration`` / ``oracle`` / ``extract_features`` are the same logic written
plainly, one configuration at a time, for reading and stepping through (notebook 08); the
tests check the two agree. ``tasks.parser`` trains on ``precompute``'s pairs and decodes with
``BatchedStates``.
"""

from __future__ import annotations

import numpy as np

from .arc_standard import N_FEATURES, NULL, SPECIALS, ParserVocab
from .ud import Sentence

__all__ = ["BatchedStates", "precompute"]


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
