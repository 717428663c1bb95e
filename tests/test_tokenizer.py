"""Tokenizer: specials, round trip, pair encoding and truncation, batch encoding == encode."""
from pathlib import Path

import pytest

from tinylm.tokenizer import (CLS, MASK, PAD, SEP, UNK, encode, encode_batch, load_tokenizer,
                              segment_ids, train_tokenizer)

TOK = Path(__file__).resolve().parent.parent / "models" / "tokenizer-8192.json"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TOK)


def test_specials_and_vocab(tok):
    assert tok.get_vocab_size() == 8192
    assert [tok.token_to_id(s) for s in ["[PAD]", "[UNK]", "[CLS]", "[MASK]", "[SEP]"]] == \
        [PAD, UNK, CLS, MASK, SEP]


def test_round_trip_lowercases_and_strips_accents(tok):
    ids = encode(tok, "Café au LAIT, please!")
    assert ids[0] == CLS and ids[-1] == SEP
    assert tok.decode(ids[1:-1]).replace(" ", "") == "cafeaulait,please!"


def test_pairs_truncation_and_segments(tok):
    ids = encode(tok, "one two three four five six seven", "alpha beta", max_len=8)
    assert len(ids) == 8 and ids.count(SEP) == 2
    assert segment_ids(ids + [PAD]) == [1] * (ids.index(SEP) + 1) + [2] * (7 - ids.index(SEP)) + [0]


def test_encode_batch_equals_encode(tok):
    a = ["the cat sat on the mat", "a much longer sentence " * 20, ""]
    b = ["short", "x", "another one here"]
    assert encode_batch(tok, a, None, 16) == [encode(tok, x, None, 16) for x in a]
    assert encode_batch(tok, a, b, 16) == [encode(tok, x, y, 16) for x, y in zip(a, b)]


def test_train_small_tokenizer():
    lines = ["the quick brown fox jumps over the lazy dog"] * 50 + ["hello world again"] * 50
    t = train_tokenizer(lines, vocab_size=60)
    assert t.token_to_id("[SEP]") == SEP and t.get_vocab_size() <= 60


def test_tokenizer_from_a_tasks_training_texts(tmp_path):
    """`tokenizer --task-text T`: a per-task BPE from T's training texts only (a word seen only in
    validation is not learnt); an unknown task is a one-line error, not a traceback."""
    import dataclasses

    from typer.testing import CliRunner
    from conftest import toy_bundle, toy_examples
    from tinylm.cli import app
    from tinylm.tokenizer import load_tokenizer
    train, val = toy_examples(40, 0), toy_examples(8, 1)
    val = [dataclasses.replace(e, text="zebraquokka zebraquokka") for e in val]
    data = toy_bundle(tmp_path, "limit", train, val)
    out = tmp_path / "tok.json"
    r = CliRunner().invoke(app, ["tokenizer", "--task-text", "limit", "--vocab", "200", "--out", str(out),
                                 "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    tok = load_tokenizer(out)
    assert tok.token_to_id("awful") is not None and tok.token_to_id("zebraquokka") is None
    r = CliRunner().invoke(app, ["tokenizer", "--task-text", "nosuch", "--out", str(out), "--data-dir", str(data)])
    assert r.exit_code == 2 and "unknown task 'nosuch'" in r.output and "Traceback" not in r.output
