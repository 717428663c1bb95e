"""Finetuning from scratch, early stopping, the progress log, and exact resume (time budget, epochs)."""
import json

import numpy as np
import pytest
from flax import serialization

from tinylm.train.finetune import FinetuneConfig, FinetuneError, finetune
from conftest import toy_examples  # noqa: E402

TINY = dict(type="embbert", vocab_size=8192, max_len=16, d=16, r=4, layers=1, kernel=4,
            dropout=0.1, init="delta")


TRAIN, VAL = toy_examples(96, 0), toy_examples(32, 1)


def _run(out, resume=False, **kw):
    cfg = FinetuneConfig(**(dict(epochs=3, lr=5e-3, warmup=1, max_len=16, batch_size=16,
                                 log_every=2, patience=None) | kw))
    return finetune(None, "limit", out, cfg, model=TINY, train_examples=TRAIN, val_examples=VAL,
                    resume=resume)


def _leaves(path):
    from jax.tree_util import tree_leaves
    st = serialization.msgpack_restore(path.read_bytes())
    if "opt_state" in st:                   # the checkpoint: its training state, not wall times
        st = {k: st[k] for k in ("params", "opt_state", "best_params", "ema", "step", "epoch", "best")
              if k in st}
    return tree_leaves(st)


def _same_run(a, b):
    ra, rb = (json.loads((p / "run.json").read_text()) for p in (a, b))
    assert ra["validation_score"] == rb["validation_score"] and ra["best_epoch"] == rb["best_epoch"]
    assert [h["val"] for h in ra["history"]] == [h["val"] for h in rb["history"]]
    assert [h["train_loss"] for h in ra["history"]] == [h["train_loss"] for h in rb["history"]]
    for f in ("params.msgpack", "ckpt.msgpack"):
        for x, y in zip(_leaves(a / f), _leaves(b / f)):
            np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "full"
    res = _run(out)
    return out, res


def test_from_scratch_learns_and_logs(full):
    out, res = full
    assert res["complete"] and res["stop_reason"] == "epochs" and res["epochs_run"] == 3
    assert res["score"] > 0.9, res
    meta = json.loads((out / "run.json").read_text())
    assert meta["pretrained_from"] is None and meta["config"]["init"] == "delta"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    kinds = [r["event"] for r in log]
    assert kinds.count("epoch") == 3 and kinds[-1] == "stop"
    assert kinds.count("step") == 3 * 6 // 2                  # 6 steps an epoch, a line every 2


def test_resume_after_time_budget_mid_epoch_is_exact(full, tmp_path):
    out = tmp_path / "cut"
    res = _run(out, time_budget=0.0)                          # stops after its first step
    assert not res["complete"] and res["stop_reason"] == "time_budget"
    state = serialization.msgpack_restore((out / "ckpt.msgpack").read_bytes())
    assert int(state["step"]) == 1 and int(state["pos"]) == 1 and int(state["epoch"]) == 0
    res = _run(out, resume=True)
    assert res["complete"] and res["score"] == full[1]["score"]
    _same_run(full[0], out)


def test_ema_keeps_the_average_and_resumes_exactly(tmp_path):
    from jax.tree_util import tree_leaves
    one = tmp_path / "one"
    _run(one, ema=0.9, epochs=1)
    st = serialization.msgpack_restore((one / "ckpt.msgpack").read_bytes())
    kept = tree_leaves(serialization.msgpack_restore((one / "params.msgpack").read_bytes()))
    assert all(np.array_equal(a, b) for a, b in zip(kept, tree_leaves(st["ema"])))
    assert not all(np.array_equal(a, b) for a, b in zip(kept, tree_leaves(st["params"])))
    full, cut = tmp_path / "full", tmp_path / "cut"
    _run(full, ema=0.9)
    _run(cut, ema=0.9, time_budget=0.0)
    with pytest.raises(FinetuneError, match="ema 0.9 != 0.0"):
        _run(cut, resume=True)                                # the average is part of the run
    _run(cut, ema=0.9, resume=True)
    _same_run(full, cut)


def test_checkpoint_without_ema_holds_no_copy_and_old_runs_resume(full, tmp_path):
    out = tmp_path / "old"
    _run(out, epochs=1)
    st = serialization.msgpack_restore((out / "ckpt.msgpack").read_bytes())
    assert "ema" not in st and "params" in st    # no second copy of the weights when it is off
    meta = json.loads((out / "run.json").read_text())
    del meta["finetune"]["ema"]
    (out / "run.json").write_text(json.dumps(meta))
    _run(out, resume=True)
    _same_run(full[0], out)


def test_resume_after_epoch_1_is_exact(full, tmp_path):
    out = tmp_path / "ep"
    _run(out, epochs=1)
    assert json.loads((out / "run.json").read_text())["epochs_run"] == 1
    _run(out, resume=True)                                    # the same command, 3 epochs
    _same_run(full[0], out)


def test_early_stopping_and_resume_errors(tmp_path):
    # lr 0: the score never improves after epoch 1, so patience 1 stops after epoch 2
    res = _run(tmp_path / "p", lr=0.0, patience=1, epochs=10)
    assert res["stop_reason"] == "patience" and res["epochs_run"] == 2 and res["best_epoch"] == 1
    with pytest.raises(FinetuneError, match="lr"):
        _run(tmp_path / "p", resume=True, lr=1e-3)
    with pytest.raises(FinetuneError, match="nothing to resume"):
        _run(tmp_path / "none", resume=True)


def test_cli_from_scratch_resume_and_stderr_lines(tmp_path):
    import gzip
    from typer.testing import CliRunner
    from tinylm.cli import app
    d = tmp_path / "data" / "tinynlp" / "emotion"
    d.mkdir(parents=True)
    for split, ex in (("train", TRAIN[:48]), ("validation", VAL[:16])):
        with gzip.open(d / f"{split}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in ex)
    r = CliRunner().invoke(app, ["finetune", "--task", "emotion", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--from-scratch" in r.output
    base = ["finetune", "--from-scratch", "--model", "embbert-nano", "--task", "emotion",
            "--out", str(tmp_path / "run"), "--max-len", "16", "--log-every", "1",
            "--data-dir", str(tmp_path / "data")]
    r = CliRunner().invoke(app, base + ["--epochs", "1"])
    assert r.exit_code == 0, r.output
    assert "epoch 1: validation accuracy" in r.output       # stderr is no terminal here
    r = CliRunner().invoke(app, base + ["--epochs", "2", "--resume"])
    assert r.exit_code == 0, r.output
    assert "(epoch " in r.output and " of 2, stop: epochs" in r.output
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["epochs_run"] == 2 and meta["config"]["init"] == "delta"


def test_from_scratch_takes_the_token_table_size_from_its_tokenizer(tmp_path):
    """A per-task tokenizer of fewer tokens than the config's vocab_size: the fresh model's token
    table has the tokenizer's size (run.json and the saved parameters say so)."""
    from tinylm.tokenizer import train_tokenizer
    tok = train_tokenizer([e.text for e in TRAIN], 60)
    path = tmp_path / "tok.json"
    tok.save(str(path))
    out = tmp_path / "small-vocab"
    cfg = FinetuneConfig(epochs=1, lr=5e-3, warmup=1, max_len=16, batch_size=16, patience=None)
    finetune(None, "limit", out, cfg, model=TINY, train_examples=TRAIN, val_examples=VAL, tokenizer=path)
    meta = json.loads((out / "run.json").read_text())
    n = tok.get_vocab_size()
    assert n < TINY["vocab_size"] and meta["config"]["vocab_size"] == n
    params = serialization.msgpack_restore((out / "params.msgpack").read_bytes())
    shapes = [np.shape(v) for v in __import__("jax").tree_util.tree_leaves(params)]
    assert any(s[0] == n for s in shapes if len(s) == 2)


def test_ema_outside_0_1_is_one_line(tmp_path):
    from typer.testing import CliRunner
    from tinylm.cli import app
    r = CliRunner().invoke(app, ["finetune", "--from-scratch", "--task", "limit", "--out", str(tmp_path / "x"),
                                 "--ema", "1.0"])
    assert r.exit_code != 0 and "--ema 1.0: a decay in [0, 1)" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x").exists()
