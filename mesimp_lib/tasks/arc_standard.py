"""The arc-standard transition system of the parser, its static oracle and its 48 features.

The parser (``tasks.parser``, notebook 08) reads a sentence word by word and builds its tree
with transitions; this module holds that system, written plainly, one configuration at a
time, for reading and stepping through (``parser_states.BatchedStates`` is the same logic
on numpy arrays for all sentences at once; the tests check the two agree).

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validate import check_choice
from .ud import PAD, UNK, Sentence, Vocab

__all__ = ["FEATURE_NAMES", "LEFT", "N_FEATURES", "NULL", "RIGHT", "ROOT", "SHIFT", "SPECIALS", "Configuration",
           "ParserVocab", "extract_features", "feature_tokens", "is_projective", "oracle", "oracle_steps"]

NULL, ROOT = "<null>", "<root>"
SPECIALS = (PAD, UNK, NULL, ROOT)  # the first entries of every parser vocabulary, in this order
SHIFT, LEFT, RIGHT = "SHIFT", "LEFT", "RIGHT"

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
