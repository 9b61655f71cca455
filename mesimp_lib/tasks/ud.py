"""Universal Dependencies English EWT: reading CoNLL-U, vocabularies, the unknown-word policy.

The treebank ships in ``data/ud_english_ewt`` (CC BY-SA 4.0, see ``data/README.md``) and
replaces the papers' Penn Treebank, which is not freely redistributable. The format is
read with the ``conllu`` package; this module only adds what a learner needs around it:

- a ``Sentence`` with the columns the tasks use (FORM, UPOS, XPOS, HEAD, DEPREL);
  multiword-token lines (``1-2``) and empty nodes (``8.1``) are skipped, as every
  UD tagger/parser evaluation does;
- errors that name the file and the line when the input is malformed;
- ``Vocab``: index maps with ``<pad>`` = 0 and ``<unk>`` = 1. Unknown-word policy
  (``min_count``): training words seen fewer than ``min_count`` times map to ``<unk>``,
  so the model learns an ``<unk>`` embedding from rare words and uses it for every word
  it has not seen at test time.
"""

from __future__ import annotations

import gzip
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import conllu

from ..validate import check_choice, check_int, check_path
from .paths import data_root

__all__ = ["PAD", "UNK", "UD_FILES", "Sentence", "Treebank", "Vocab", "load_ud", "read_conllu", "punct_mask"]

PAD, UNK = "<pad>", "<unk>"

# split -> (file name, sha256 of the gzip file as shipped; data/README.md)
UD_FILES = {
    "train": ("en_ewt-ud-train.conllu.gz", "bd47e08c9e18ec12d319e84df2ccdb272ff6de1d0dba5761117d3caf8b358f7b"),
    "dev": ("en_ewt-ud-dev.conllu.gz", "41086e3afc9ae572f899c9123f874d6d04a52e374a3d2ac7a6667ce48e3bf3e3"),
    "test": ("en_ewt-ud-test.conllu.gz", "29c151eee8846d3f3ef7806c126ecac9932af2317c008c6d6b076c5e14950dbe"),
}

# UPOS / XPOS tags of punctuation, excluded from UAS/LAS as usual (Chen & Manning used the
# PTB punctuation tags; UD marks the same tokens PUNCT)
PUNCT_UPOS = frozenset({"PUNCT"})
PUNCT_XPOS = frozenset({"``", "''", ",", ".", ":", "-LRB-", "-RRB-", "HYPH", "NFP"})


@dataclass
class Sentence:
    """One sentence: parallel lists over its words (1-based ids are list index + 1)."""

    words: list[str]
    upos: list[str]
    xpos: list[str]
    heads: list[int]  # 0 = root
    deprels: list[str]
    sent_id: str | None = None
    line: int = 0  # line of the sentence's first token line in its file (1-based)

    def __len__(self) -> int:
        return len(self.words)

    def tags(self, tagset: str) -> list[str]:
        return self.upos if check_choice("tagset", tagset, ("upos", "xpos")) == "upos" else self.xpos


class ConlluError(ValueError):
    """Malformed CoNLL-U input; the message names the file and the line."""


def _int(value, what: str, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConlluError(f"{where}: {what} must be an integer, got {value!r}")


def _parse_block(lines: list[tuple[int, str]], source: str) -> Sentence | None:
    """Parse one sentence block (``(line number, text)`` pairs) with ``conllu``."""
    first = lines[0][0]
    token_lines = [(n, t) for n, t in lines if not t.startswith("#")]
    if not token_lines:
        return None
    for n, t in token_lines:
        cols = t.split("\t")
        if len(cols) != 10:
            raise ConlluError(
                f"{source}:{n}: a token line needs 10 tab-separated columns "
                f"(ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC), found {len(cols)}: {t[:80]!r}"
            )
    try:
        parsed = conllu.parse("\n".join(t for _, t in lines) + "\n\n")
    except Exception as e:  # conllu's ParseException and friends: find the offending line
        line = first
        for n, t in token_lines:
            try:
                conllu.parse(t + "\n\n")
            except Exception:
                line = n
                break
        raise ConlluError(f"{source}:{line}: malformed CoNLL-U line: {e}") from e
    if len(parsed) != 1:
        raise ConlluError(f"{source}:{first}: expected one sentence in this block, found {len(parsed)}")
    tl = parsed[0]
    words, upos, xpos, heads, deprels, word_lines = [], [], [], [], [], []
    for (n, _), tok in zip(token_lines, tl):
        where = f"{source}:{n}"
        tid = tok["id"]
        if not isinstance(tid, int):  # multiword token (1, '-', 2) or empty node (8, '.', 1)
            continue
        if tid != len(words) + 1:
            raise ConlluError(f"{where}: token id {tid} out of sequence (expected {len(words) + 1})")
        head = _int(tok["head"], "HEAD", where)
        words.append(tok["form"])
        upos.append(tok["upos"])
        xpos.append(tok["xpos"] if tok["xpos"] is not None else "_")
        heads.append(head)
        deprels.append(tok["deprel"])
        word_lines.append(n)
    if not words:
        raise ConlluError(f"{source}:{first}: sentence without word lines")
    for i, (h, n) in enumerate(zip(heads, word_lines)):
        if not 0 <= h <= len(words):
            raise ConlluError(f"{source}:{n}: word {i + 1} has HEAD {h}, outside 0..{len(words)} "
                              f"(the sentence has {len(words)} words)")
    _check_tree(heads, word_lines, source)
    return Sentence(words, upos, xpos, heads, deprels, sent_id=tl.metadata.get("sent_id"), line=token_lines[0][0])


def _check_tree(heads: list[int], word_lines: list[int], source: str) -> None:
    """One root (HEAD 0) and no cycle: every word reaches the root by its heads (a tree, as UD requires)."""
    roots = [i for i, h in enumerate(heads) if h == 0]
    if len(roots) != 1:
        where = f"{source}:{word_lines[roots[1]] if roots else word_lines[0]}"
        raise ConlluError(f"{where}: a sentence needs exactly one root (HEAD 0), this one has {len(roots)}"
                          + (f" (words {', '.join(str(r + 1) for r in roots)})" if roots else ""))
    reaches_root = [False] * len(heads)
    for start in range(len(heads)):
        path, i = [], start
        while i >= 0 and not reaches_root[i]:
            if i in path:
                cycle = path[path.index(i):]
                raise ConlluError(f"{source}:{word_lines[i]}: the heads form a cycle (words "
                                  f"{' -> '.join(str(w + 1) for w in cycle + [i])}), not a tree")
            path.append(i)
            i = heads[i] - 1  # HEAD 0 (the root) gives -1
        for w in path:
            reaches_root[w] = True


def _decode(path: Path, raw: bytes) -> str:
    """The file's text; a broken gzip or UTF-8 raises ``ConlluError`` naming the file (and the line)."""
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ConlluError(f"{path}: not a valid gzip file ({e}); restore it with `git checkout -- {path}`") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConlluError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); "
                          "CoNLL-U files are UTF-8") from None


def read_conllu(path: str | Path, text: str | None = None) -> list[Sentence]:
    """Read a CoNLL-U file (plain or ``.gz``) into ``Sentence`` objects.

    ``text`` parses the given string instead (``path`` then only names it in errors).
    Raises ``ConlluError`` (a ``ValueError``) naming the file and line on malformed input.
    """
    path = check_path("path", path)
    if text is None:
        if not path.is_file():
            raise FileNotFoundError(f"CoNLL-U file {path} is missing")
        text = _decode(path, path.read_bytes())
    sentences, block = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r")
        if line.strip():
            block.append((n, line))
        elif block:
            s = _parse_block(block, str(path))
            if s is not None:
                sentences.append(s)
            block = []
    if block:
        s = _parse_block(block, str(path))
        if s is not None:
            sentences.append(s)
    return sentences


@dataclass
class Vocab:
    """Index maps for words, tags or labels. ``<pad>`` = 0 and ``<unk>`` = 1 when ``specials``."""

    itos: list[str]
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("Vocab: duplicate entries")

    @classmethod
    def build(cls, items, min_count: int = 1, specials=(PAD, UNK), extra=()) -> "Vocab":
        """Entries seen at least ``min_count`` times, most frequent first (ties by text)."""
        check_int("min_count", min_count, 1)
        counts = Counter(items)
        kept = sorted((s for s, c in counts.items() if c >= min_count), key=lambda s: (-counts[s], s))
        head = [s for s in (*specials, *extra)]
        return cls(head + [s for s in kept if s not in head])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, s: str) -> bool:
        return s in self.stoi

    def index(self, s: str) -> int:
        """The index of ``s``; ``<unk>``'s for an unknown entry (KeyError without ``<unk>``)."""
        i = self.stoi.get(s)
        if i is not None:
            return i
        if UNK in self.stoi:
            return self.stoi[UNK]
        raise KeyError(f"{s!r} is not in this vocabulary (it has no {UNK} entry)")

    def encode(self, items) -> list[int]:
        return [self.index(s) for s in items]


@dataclass
class Treebank:
    train: list[Sentence]
    dev: list[Sentence]
    test: list[Sentence]


def _checked_path(split: str, root: Path) -> Path:
    name, sha = UD_FILES[split]
    path = root / "ud_english_ewt" / name
    hint = (f"It ships with the repository as data/ud_english_ewt/{name}: restore it with "
            f"`git checkout -- data/ud_english_ewt/{name}` (or point MESIMP_DATA_DIR at a folder holding "
            "ud_english_ewt/). Nothing is downloaded at run time.")
    if not path.is_file():
        raise FileNotFoundError(f"UD English EWT file {path} is missing. {hint}")
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if got != sha:
        raise ValueError(f"UD English EWT file {path} is corrupted: sha256 {got}, expected {sha}. {hint}")
    return path


@lru_cache(maxsize=2)
def _load(root: str) -> Treebank:
    r = Path(root)
    return Treebank(*(read_conllu(_checked_path(s, r)) for s in ("train", "dev", "test")))


def load_ud(root: str | Path | None = None) -> Treebank:
    """The shipped UD English EWT train/dev/test (sha256-checked, cached per process)."""
    return _load(str(check_path("root", root, optional=True) or data_root()))


def punct_mask(sentence: Sentence) -> list[bool]:
    """True for punctuation tokens (UPOS PUNCT or a PTB punctuation XPOS), excluded from UAS/LAS."""
    return [u in PUNCT_UPOS or x in PUNCT_XPOS for u, x in zip(sentence.upos, sentence.xpos)]
