"""The spine's training and quantization: a micro config trains in seconds, the quantized
graph passes onnx.checker, and the integer reference agrees with the float model."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("micro")
    r = subprocess.run([sys.executable, "-m", "tinylm", "train", "--task", "emotion", "--config", "micro",
                        "--epochs", "2", "--limit", "1200", "--lr", "3e-3", "--out", str(out / "run")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def test_training_learns(micro_run):
    meta = json.loads((micro_run / "run" / "run.json").read_text())
    assert meta["arch"] == "tiny" and meta["task"] == "emotion"
    assert meta["history"][-1]["loss"] < meta["history"][0]["loss"]
    assert meta["val_score"] > 0.30          # 6 classes, majority class is ~0.35 of 300 examples


def test_quantized_graph_agrees_with_float(micro_run):
    from tinylm import graph
    from tinylm.graph import reference
    from tinylm.train.floatrun import FloatRun
    from tinylm.quant.tiny import quantize_run
    from tinylm.tokenizer import encode
    from tinynlp_data import load_split
    onnx_path = micro_run / "model.onnx"
    quantize_run(micro_run / "run", onnx_path, calib=256)
    onnx.checker.check_model(onnx.load(str(onnx_path)))
    g = graph.load(onnx_path)
    run = FloatRun(micro_run / "run")
    ex = load_split("emotion", "validation")[:80]
    ids = [encode(run.tokenizer, e.text, None, run.max_len) for e in ex]
    flt = run.predict(ids)
    integer = np.array([reference.run(g, i) for i in ids]) * g.meta["logit_scale"]
    agree = (flt.argmax(1) == integer.argmax(1)).mean()
    assert agree >= 0.85, agree
    assert np.abs(flt - integer).max() < 0.5 * np.abs(flt).max() + 0.5


def test_unknown_task_and_config_are_clear_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tinylm", "train", "--task", "nope", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "known tasks" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "tinylm", "train", "--task", "emotion", "--config", "huge",
                        "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode != 0 and "unknown config" in r.stderr


def test_checkpoint_of_another_config_is_a_clear_error(micro_run, tmp_path):
    import shutil
    from tinylm.train.floatrun import FloatRun, RunError
    bad = tmp_path / "bad"
    shutil.copytree(micro_run / "run", bad)
    meta = json.loads((bad / "run.json").read_text())
    meta["config"]["d"] = 48                       # params.msgpack holds d = 32
    (bad / "run.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match="a checkpoint of another config"):
        FloatRun(bad).predict([[2, 4]])
