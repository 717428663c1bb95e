"""`tinylm mlperf export` writes what the MLPerf Tiny runner reads (its datasets.py, script.py,
device_manager.py: a folder of .bin inputs, a headerless y_labels.csv, tests and devices yaml);
`tinylm mlperf serve` puts a qemu-* build on a pty that answers the EEMBC name command."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest
yaml = pytest.importorskip("yaml")   # PyYAML: what the runner itself parses the files with

from conftest import DEFAULT_MODEL, ROOT
from tinylm.harness.evaluate import EvalError

SAMPLE = ROOT / "tinynlp_data" / "samples" / "emotion-validation-sample.jsonl.gz"


def fake_build(tmp_path, board="qemu-m4"):
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(DEFAULT_MODEL, b / "model.onnx")
    (b / "build.json").write_text(json.dumps({"board": board, "model": "model.onnx"}))
    return b


def test_export_writes_the_runners_files(tmp_path):
    from tinylm.harness.mlperf import export
    from tinylm.harness.evaluate import open_engine, select_examples
    from tinynlp_data import get_task
    from tinylm.tokenizer import encode
    out = tmp_path / "ds"
    r = export(fake_build(tmp_path), "emotion", out, data=str(SAMPLE), limit=7, iterations=33)
    folder = out / r["folder"]
    rows = list(csv.reader((folder / "y_labels.csv").open()))
    examples = select_examples(get_task("emotion"), str(SAMPLE), None, None, 0, 7)
    eng = open_engine(DEFAULT_MODEL)
    assert [int(row[2]) for row in rows] == [e.label for e in examples] and {row[1] for row in rows} == {"6"}
    for row, ex in zip(rows, examples):     # the bytes `tinylm eval` loads, uint16 little-endian
        ids = encode(eng.tokenizer, ex.text, ex.text_b, eng.max_len)
        assert (folder / row[0]).read_bytes() == b"".join(i.to_bytes(2, "little") for i in ids)
    name = eng.graph.name
    acc = yaml.safe_load((out / "tests_accuracy.yaml").read_text())
    perf = yaml.safe_load((out / "tests_performance.yaml").read_text())
    assert acc[name]["model"] == r["folder"] and acc[name]["truth_file"] == "y_labels.csv"
    assert acc[name]["script"] == [{"loop": ["download", "infer 1 0"]}]
    assert perf[name]["script"] == [{"loop 5": ["download", "infer 33 1"]}]
    (dut,) = yaml.safe_load((out / "devices.yaml").read_text())
    assert dut["type"] == "dut" and dut["check_name"] == f"tinylm-{name}" and dut["usb"] == {0x1209: [0x0001]}
    assert "list_ports.comports = comports" in (out / "qemu_port.py").read_text()


def test_export_refuses_what_the_runner_cannot_score(tmp_path):
    from tinylm.harness.mlperf import export
    with pytest.raises(EvalError, match="--force"):
        export(fake_build(tmp_path), "imdb", tmp_path / "o", data=str(SAMPLE), iterations=1)
    b = tmp_path / "hw"
    b.mkdir()
    shutil.copy(DEFAULT_MODEL, b / "model.onnx")
    (b / "build.json").write_text(json.dumps({"board": "nrf52", "model": "model.onnx"}))
    with pytest.raises(EvalError, match="give --port .* or --iterations"):
        export(b, "emotion", tmp_path / "o2", data=str(SAMPLE), limit=2)
    r = export(b, "emotion", tmp_path / "o3", data=str(SAMPLE), limit=2, iterations=5)
    assert yaml.safe_load((tmp_path / "o3" / "devices.yaml").read_text())[0]["usb"] == {0x1366: [0x1015, 0x1051, 0x0105]}
    assert not (tmp_path / "o3" / "qemu_port.py").exists() and r["qemu"] is False


def test_serve_puts_the_firmware_on_a_pty(default_build):
    import serial
    from tinylm.harness.mlperf import QemuPty
    with QemuPty(default_build) as q, serial.Serial(q.path, 115200, timeout=5) as port:
        port.write(b"name%")
        reply = b""
        while not reply.endswith(b"m-ready\r\n"):
            chunk = port.read(64)
            assert chunk, reply
            reply += chunk
        assert reply.decode().splitlines()[0].startswith("m-name-dut-[tinylm-")   # the banner was drained


def test_cli_export_with_measured_windows(default_build, tmp_path):
    r = subprocess.run([sys.executable, "-m", "tinylm", "mlperf", "export", str(default_build), "--task", "emotion",
                        "--data", str(SAMPLE), "--limit", "5", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    n = int(r.stdout.split("infer ")[1].split()[0])
    assert n >= 1 and "qemu_port.py PTY" in r.stdout
