"""Pretraining: masking statistics, loss goes down, resume is exact, bad checkpoints are clear."""
import json

import numpy as np
import jax
import pytest

from tinylm.train import pretrain as P
from tinylm.tokenizer import CLS, MASK, SEP
from conftest import toy_examples  # noqa: E402

TINY = dict(type="embbert", vocab_size=8192, max_len=32, d=16, r=4, layers=1, kernel=4, dropout=0.1)


def _stream(n=5000, seed=0):
    return np.random.default_rng(seed).integers(5, 400, n).astype(np.uint16)


def test_masking_is_15_percent_80_10_10():
    s = _stream(100_000)
    b = P.make_batch(s, seed=1, step=0, batch_size=256, seq_len=64, vocab_size=8192, nsp=True)
    assert b["ids"].shape == (256, 64) and b["positions"].shape == (256, 10)
    ids, pos, lab = b["ids"], b["positions"], b["labels"]
    assert (ids[:, 0] == CLS).all() and ((ids == SEP).sum(1) == 2).all()
    assert (b["weights"] == 1).all()                     # full sequences: every slot is real
    got = np.take_along_axis(ids, pos, 1)
    frac_mask = (got == MASK).mean()
    frac_keep = (got == lab).mean()
    assert 0.77 < frac_mask < 0.83 and 0.07 < frac_keep < 0.13
    assert not np.isin(lab, [CLS, SEP, MASK, 0]).any()   # specials are never predicted
    # unmasked positions are unchanged: rebuild the original sequence
    orig = ids.copy()
    np.put_along_axis(orig, pos, lab, 1)
    assert set(np.unique(b["nsp"])) == {0, 1}
    # deterministic in (seed, step)
    b2 = P.make_batch(s, seed=1, step=0, batch_size=256, seq_len=64, vocab_size=8192, nsp=True)
    assert all((b[k] == b2[k]).all() for k in b)


def _cfg(**kw):
    return P.PretrainConfig(model=TINY, seq_len=32, batch_size=8, lr=3e-3, warmup=1, log_every=1,
                            ckpt_every=2, **kw)


def test_training_lowers_the_loss(tmp_path):
    logs = []
    P.pretrain(tmp_path / "a", _cfg(steps=8, nsp=False), stream=_stream(), on_log=logs.append)
    first, last = logs[0]["mlm_loss"], logs[-1]["mlm_loss"]
    assert last < first
    assert "nsp_loss" not in logs[-1]                # no NSP: its untrained head is not reported
    meta = json.loads((tmp_path / "a" / "run.json").read_text())
    assert meta["step"] == 8 and meta["tokens"] == 8 * 8 * 32 and meta["arch"] == "embbert"


def test_resume_is_exact(tmp_path):
    from flax import serialization
    s = _stream()
    P.pretrain(tmp_path / "full", _cfg(steps=4), stream=s)
    P.pretrain(tmp_path / "half", _cfg(steps=2), stream=s)
    P.pretrain(tmp_path / "half", _cfg(steps=4), stream=s, resume=True)
    a = serialization.msgpack_restore((tmp_path / "full" / "ckpt.msgpack").read_bytes())
    b = serialization.msgpack_restore((tmp_path / "half" / "ckpt.msgpack").read_bytes())
    assert a["step"] == b["step"] == 4
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_resume_with_another_config_is_a_clear_error(tmp_path):
    P.pretrain(tmp_path / "r", _cfg(steps=1), stream=_stream())
    with pytest.raises(P.PretrainError, match="another config"):
        P.pretrain(tmp_path / "r", P.PretrainConfig(model=dict(TINY, d=8), seq_len=32, steps=2),
                   stream=_stream(), resume=True)
    with pytest.raises(P.PretrainError, match="nothing to resume"):
        P.pretrain(tmp_path / "empty", _cfg(steps=1), stream=_stream(), resume=True)


def test_a_run_begun_without_init_resumes_under_a_config_with_it(tmp_path):
    # TINY has no "init" key, like models/embbert-pre; the configs now say init "delta"
    P.pretrain(tmp_path / "r", _cfg(steps=1), stream=_stream())
    cfg = _cfg(steps=2)
    cfg.model = dict(TINY, init="delta", conv_impl="grouped")
    P.pretrain(tmp_path / "r", cfg, stream=_stream(), resume=True)
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["step"] == 2 and meta["config"] == TINY


# ---------------------------------------------------------------- finetuning


def test_finetune_writes_a_floatrun_that_predicts(tmp_path):
    from tinylm.train.finetune import FinetuneConfig, finetune
    from tinylm.train.floatrun import FloatRun
    from tinylm.tokenizer import encode
    P.pretrain(tmp_path / "pre", _cfg(steps=1), stream=_stream(),
               tokenizer="models/tokenizer-8192.json")
    cfg = FinetuneConfig(epochs=3, lr=5e-3, warmup=1, max_len=16, batch_size=16)
    val = toy_examples(64, 1)
    res = finetune(tmp_path / "pre", "limit", tmp_path / "ft", cfg,
                   train_examples=toy_examples(256, 0), val_examples=val)
    assert res["score"] > 0.9, res
    run = FloatRun(tmp_path / "ft")
    assert run.label_names == ["no", "yes"] and run.max_len == 16
    logits = run.predict([encode(run.tokenizer, e.text, None, 16) for e in val])
    acc = float((logits.argmax(-1) == np.array([e.label for e in val])).mean())
    assert acc == pytest.approx(res["score"])


def test_finetune_regression_and_bad_pretrain_dir(tmp_path):
    from tinylm.train.finetune import FinetuneConfig, FinetuneError, finetune
    from tinynlp_data import Example
    with pytest.raises(FinetuneError, match="not a pretraining run"):
        finetune(tmp_path / "nothing", "stsb", tmp_path / "x")
    P.pretrain(tmp_path / "pre", _cfg(steps=1), stream=_stream(),
               tokenizer="models/tokenizer-8192.json")
    ex = [Example(i, "a b", "c d", float(i % 5)) for i in range(32)]
    res = finetune(tmp_path / "pre", "stsb", tmp_path / "ft",
                   FinetuneConfig(epochs=1, max_len=16, batch_size=16), train_examples=ex, val_examples=ex)
    assert res["metric"] == "spearman"
    # a backbone of another config is a clear error
    import json as _j
    meta = _j.loads((tmp_path / "pre" / "run.json").read_text())
    meta["config"]["d"] = 8
    (tmp_path / "pre" / "run.json").write_text(_j.dumps(meta))
    from tinylm.models.embbert import CheckpointMismatch
    with pytest.raises(CheckpointMismatch, match="another config"):
        finetune(tmp_path / "pre", "stsb", tmp_path / "ft2", train_examples=ex, val_examples=ex)


def test_ctrl_c_keeps_the_last_checkpoint(tmp_path):
    from flax import serialization

    def interrupt(rec):
        if rec["step"] == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        P.pretrain(tmp_path / "c", _cfg(steps=10), stream=_stream(), on_log=interrupt)
    state = serialization.msgpack_restore((tmp_path / "c" / "ckpt.msgpack").read_bytes())
    assert state["step"] == 3
    assert json.loads((tmp_path / "c" / "run.json").read_text())["step"] == 3


def test_bench_table_reuses_finished_tasks(tmp_path):
    from tinylm.train.bench import bench
    for t, s in [("emotion", 0.8), ("snips", 0.9)]:
        (tmp_path / t).mkdir()
        (tmp_path / t / "run.json").write_text(json.dumps(dict(
            metric="accuracy", validation_score=s, best_epoch=2, wall_s=10.0, n_train=5, max_len=64)))
    res = bench(tmp_path / "pre", "tinynlp", tmp_path, tasks=["emotion", "snips"], reuse=True,
                log=lambda s: None)
    assert res["average"] == pytest.approx(85.0)
    assert "| emotion | accuracy | 80.00 | 89.58 |" in res["table"]
    assert "average (2/7)" in res["table"]
    with pytest.raises(ValueError, match="not in suite"):
        bench(tmp_path / "pre", "tinynlp", tmp_path, tasks=["cola"])


def test_task_adaptive_pretraining_reads_the_training_texts(tmp_path):
    """`pretrain --task-text T` trains on T's training texts (not validation, not labels); with
    --corpus as well it is a one-line error."""
    from typer.testing import CliRunner
    from conftest import toy_bundle
    from tinylm.cli import app
    import dataclasses
    train, val = toy_examples(40, 0), toy_examples(8, 1)
    val[0] = dataclasses.replace(val[0], text="zebra quokka validation only")
    data = toy_bundle(tmp_path, "limit", train, val)
    assert P.task_texts(["limit"], data) == [e.text for e in train]
    out = tmp_path / "tapt"
    args = ["pretrain", "--model", "embbert-nano", "--task-text", "limit", "--no-nsp", "--steps", "2",
            "--seq-len", "32", "--batch-size", "4", "--warmup", "1", "--out", str(out), "--data-dir", str(data)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "run.json").read_text())
    assert meta["step"] == 2 and meta["corpus"] == "task texts"
    from tinylm.tokenizer import load_tokenizer
    tok = load_tokenizer(out / "tokenizer.json")
    n = sum(len(e.ids) for e in tok.encode_batch([e.text for e in train], add_special_tokens=False))
    assert meta["corpus_tokens"] == n                  # exactly the training texts
    r = CliRunner().invoke(app, args[:-2] + ["--corpus", str(tmp_path), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "not both" in r.output


def test_bench_from_scratch_trains_each_task_without_a_backbone(tmp_path):
    from typer.testing import CliRunner
    from conftest import toy_bundle
    from tinylm.cli import app
    data = toy_bundle(tmp_path, "limit", toy_examples(48, 0), toy_examples(16, 1))
    out = tmp_path / "bench"
    args = ["bench", "--from-scratch", "--model", "embbert-nano", "--tasks", "limit", "--epochs", "2",
            "--patience", "1", "--max-len", "16", "--no-baseline", "--out", str(out), "--data-dir", str(data)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "limit" / "run.json").read_text())
    assert meta["pretrained_from"] is None and meta["config"]["d"] == 64      # embbert-nano, no backbone
    assert "| limit | accuracy |" in (out / "table.md").read_text()
    r = CliRunner().invoke(app, ["bench", "--tasks", "limit", "--out", str(out)])
    assert r.exit_code == 2 and "--from-scratch" in r.output


def test_bench_with_task_tokenizers_and_the_bag_of_words_teacher(tmp_path):
    """`bench --from-scratch --task-tokenizer --teacher tfidf`: each task gets a BPE of its own
    training texts (the model's token table its size) and the bag-of-words teacher; another
    teacher is a one-line error."""
    pytest.importorskip("sklearn")
    from typer.testing import CliRunner
    from conftest import toy_bundle
    from tinylm.cli import app
    data = toy_bundle(tmp_path, "limit", toy_examples(48, 0), toy_examples(16, 1))
    out = tmp_path / "bench"
    args = ["bench", "--from-scratch", "--model", "embbert-nano", "--tasks", "limit", "--epochs", "1",
            "--max-len", "16", "--no-baseline", "--out", str(out), "--data-dir", str(data)]
    r = CliRunner().invoke(app, args + ["--task-tokenizer", "--teacher", "tfidf"])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "limit" / "run.json").read_text())
    from tinylm.tokenizer import load_tokenizer
    n = load_tokenizer(out / "tokenizers" / "limit.json").get_vocab_size()
    assert meta["teacher"] == "tfidf" and meta["config"]["vocab_size"] == n < 8192
    assert (out / "limit" / "teacher-tfidf.npy").is_file()
    r = CliRunner().invoke(app, args + ["--teacher", "models/embbert-nlu-scratch"])
    assert r.exit_code == 2 and "bag of words only" in r.output
