"""`tinylm eval` as a newcomer meets it (issue 12): result files that never collide and never land
in the tracked models/, a model refused on another task's labels, and serial problems (no
device, a closed port, a socket that never answers) as one line that says what to check."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import DEFAULT_MODEL, ROOT
from tinylm.harness import device as D
from tinylm.harness.evaluate import EvalError, default_json, evaluate

SAMPLE = ROOT / "tinynlp_data" / "samples" / "emotion-validation-sample.jsonl.gz"


def test_default_json_names_the_engine_and_keeps_out_of_models(tmp_path):
    build, run = tmp_path / "build", tmp_path / "run"
    build.mkdir(), run.mkdir()
    onnx = tmp_path / "run" / "model.onnx"
    onnx.write_bytes(b"")
    paths = {default_json(build, "emotion", "device"), default_json(run, "emotion", "float"),
             default_json(onnx, "emotion", "reference"), default_json(tmp_path / "run" / "other.onnx", "emotion", "reference")}
    assert paths == {build / "eval-emotion-device.json", run / "eval-emotion-float.json",
                     run / "eval-emotion-reference-model.json", run / "eval-emotion-reference-other.json"}
    models = ROOT / "models"
    assert default_json(DEFAULT_MODEL, "emotion", "reference") == ROOT / "runs/eval/default/eval-emotion-reference.json"
    assert default_json(models / "embbert-emotion", "emotion", "float") == \
        ROOT / "runs/eval/embbert-emotion/eval-emotion-float.json"
    for p in paths | {default_json(DEFAULT_MODEL, "emotion", "reference")}:
        assert models not in p.parents


def test_cli_eval_of_a_tracked_model_writes_under_runs(tmp_path):
    out = ROOT / "runs/eval/default/eval-emotion-reference.json"
    r = subprocess.run([sys.executable, "-m", "tinylm", "eval", str(DEFAULT_MODEL), "--task", "emotion",
                        "--data", str(SAMPLE), "--limit", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"results: {out}" in r.stdout and json.loads(out.read_text())["examples"] == 2
    shutil.rmtree(ROOT / "runs/eval/default")
    assert not list((ROOT / "models").glob("eval-*"))


def test_labels_of_another_task_are_refused_unless_forced(tmp_path):
    import gzip
    imdb = tmp_path / "imdb.jsonl.gz"
    with gzip.open(imdb, "wt") as f:
        f.write(json.dumps({"id": 1, "text": "a fine film", "label": 1}) + "\n")
    with pytest.raises(EvalError, match=r"predicts labels \[sadness,joy,love,anger,fear,surprise\] \(6\) but "
                                        r"task imdb has \[neg,pos\] \(2\).*--force"):
        evaluate(DEFAULT_MODEL, "imdb", data=str(imdb), json_out=tmp_path / "r.json")
    res = evaluate(DEFAULT_MODEL, "imdb", data=str(imdb), json_out=tmp_path / "r.json", force=True)
    assert res["examples"] == 1


def fake_build(tmp_path) -> Path:
    """A build directory without an ELF: enough for --port, which never starts QEMU."""
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(DEFAULT_MODEL, b / "model.onnx")
    (b / "build.json").write_text(json.dumps({"board": "qemu-m4", "model": "model.onnx"}))
    return b


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_error(args) -> str:
    r = subprocess.run([sys.executable, "-m", "tinylm", "eval", *args, "--task", "emotion", "--data", str(SAMPLE),
                        "--limit", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stdout == "", r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_no_device_at_the_port_is_one_line(tmp_path):
    msg = cli_error([str(fake_build(tmp_path)), "--port", str(tmp_path / "ttyACM9")])
    assert "no device at" in msg and "plugged in" in msg


def test_connection_refused_is_one_line(tmp_path):
    msg = cli_error([str(fake_build(tmp_path)), "--port", f"socket://127.0.0.1:{closed_port()}"])
    assert "nothing listens at socket://127.0.0.1:" in msg and "QEMU" in msg


def test_a_socket_that_never_answers_is_one_line(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []

    def accept():   # accepts every connection (the client reopens once) and never writes a byte
        try:
            while True:
                held.append(srv.accept()[0])
        except OSError:
            pass
    threading.Thread(target=accept, daemon=True).start()
    try:
        msg = cli_error([str(fake_build(tmp_path)), "--port", f"socket://127.0.0.1:{srv.getsockname()[1]}"])
    finally:
        srv.close()
        for c in held:
            c.close()
    assert "opened but nothing answered a tinylm command" in msg and "baud" in msg


def test_device_unreachable_from_the_client():
    with pytest.raises(D.DeviceUnreachable, match="nothing listens"):
        D.Device(f"socket://127.0.0.1:{closed_port()}")
    with pytest.raises(D.DeviceUnreachable, match="no device at /dev/ttyNOPE"):
        D.Device("/dev/ttyNOPE")


def test_workers_need_qemu(tmp_path):
    with pytest.raises(EvalError, match="--workers N runs N QEMU instances"):
        evaluate(DEFAULT_MODEL, "emotion", data=str(SAMPLE), limit=1, json_out=tmp_path / "r.json", workers=2)
    with pytest.raises(EvalError, match="--workers N runs N QEMU"):
        evaluate(fake_build(tmp_path), "emotion", data=str(SAMPLE), limit=1, json_out=tmp_path / "r.json",
                 workers=2, port="socket://127.0.0.1:1")
