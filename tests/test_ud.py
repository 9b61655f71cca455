"""UD English EWT reading: the shipped files, malformed input errors (file and line), the vocabulary."""

import gzip

import pytest

from mesimp_lib.tasks.ud import UNK, ConlluError, Vocab, load_ud, punct_mask, read_conllu

GOOD = """# sent_id = a
# text = He left .
1\tHe\the\tPRON\tPRP\t_\t2\tnsubj\t_\t_
2\tleft\tleave\tVERB\tVBD\t_\t0\troot\t_\t_
3\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\t_

# sent_id = b
1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t3:conj\t_
"""


def test_reads_sentences_skipping_multiword_tokens_and_empty_nodes(tmp_path):
    sents = read_conllu(tmp_path / "x.conllu", text=GOOD)
    assert [s.words for s in sents] == [["He", "left", "."], ["do", "n't", "go"]]
    assert sents[0].heads == [2, 0, 2] and sents[0].deprels == ["nsubj", "root", "punct"]
    assert sents[1].upos == ["AUX", "PART", "VERB"] and sents[1].xpos == ["VBP", "RB", "VB"]
    assert sents[0].sent_id == "a" and sents[1].line == 8
    assert punct_mask(sents[0]) == [False, False, True]


def test_gzip_file_is_read(tmp_path):
    path = tmp_path / "x.conllu.gz"
    path.write_bytes(gzip.compress(GOOD.encode()))
    assert len(read_conllu(path)) == 2


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("2\tleft\tleave\tVERB\tVBD\t_\t0\troot", "needs 10 tab-separated columns"),
        ("2\tleft\tleave\tVERB\tVBD\t_\tX\troot\t_\t_", "head"),
        ("2\tleft\tleave\tVERB\tVBD\t_\t9\troot\t_\t_", "HEAD 9"),
        ("5\tleft\tleave\tVERB\tVBD\t_\t0\troot\t_\t_", "out of sequence"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, bad_line, message):
    text = GOOD.replace("2\tleft\tleave\tVERB\tVBD\t_\t0\troot\t_\t_", bad_line)
    path = tmp_path / "broken.conllu"
    path.write_text(text)
    with pytest.raises(ConlluError) as e:
        read_conllu(path)
    assert str(path) in str(e.value) and message in str(e.value)
    assert isinstance(e.value, ValueError)
    # the line of the offending token is named
    assert f"{path}:4:" in str(e.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.conllu"):
        read_conllu(tmp_path / "nope.conllu")


def test_vocab_unknown_word_policy():
    v = Vocab.build(["a", "b", "a", "c", "a", "b"], min_count=2)
    assert v.itos == ["<pad>", UNK, "a", "b"]
    assert v.encode(["a", "c", "zzz"]) == [2, 1, 1]
    with pytest.raises(ValueError, match="min_count"):
        Vocab.build(["a"], min_count=0)


def test_shipped_treebank_sizes():
    tb = load_ud()
    assert (len(tb.train), len(tb.dev), len(tb.test)) == (12544, 2001, 2077)
    assert sum(len(s) for s in tb.train) == 204577


def test_corrupted_treebank_file_is_named(tmp_path):
    (tmp_path / "ud_english_ewt").mkdir()
    for name in ("en_ewt-ud-train.conllu.gz", "en_ewt-ud-dev.conllu.gz", "en_ewt-ud-test.conllu.gz"):
        (tmp_path / "ud_english_ewt" / name).write_bytes(b"not the file")
    with pytest.raises(ValueError, match="corrupted.*git checkout"):
        load_ud(tmp_path)
