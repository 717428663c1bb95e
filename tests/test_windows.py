"""Inputs longer than L as windows (tinylm/graph/windows.py is the spec; firmware/runtime/windows.c
runs it): the spans, the runtime's C on the host under ASan+UBSan, the firmware in QEMU with the
stub model and with the bundled model, and the CLI's checks."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinylm.graph import windows as W

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "firmware" / "runtime"
STUB = ROOT / "tests" / "fixtures" / "stub_model.c"       # max_tokens 64, 3 labels
CC = shutil.which("gcc") or shutil.which("cc")


def stub_logits(ids):
    """tests/fixtures/stub_model.c in Python: position-dependent, so a wrong window shows."""
    return np.array([sum(t * (i + 1) * (j + 1) for i, t in enumerate(ids)) % 100003 - 50000
                     for j in range(3)], np.int32)


@pytest.mark.parametrize("n,L,stride", [(10, 64, 31), (64, 64, 31), (65, 64, 31), (200, 64, 31),
                                         (200, 64, 62), (201, 10, 1), (300, 64, 20)])
def test_spans_cover_the_body_in_order_within_L(n, L, stride):
    sp = W.spans(n, L, stride)
    m = n - 2
    assert sp[0][0] == 0 and sp[-1][0] + sp[-1][1] == m            # from the first body token to the last
    assert all(1 <= k <= L - 2 or n <= L for _, k in sp)
    assert all(b[0] - a[0] == stride for a, b in zip(sp, sp[1:]))
    covered = set()
    for s, k in sp:
        covered |= set(range(s, s + k))
    assert covered == set(range(m))
    ids = list(range(100, 100 + n))
    ws = W.windows(ids, L, stride)
    assert all(len(w) <= L and w[0] == ids[0] and w[-1] == ids[-1] for w in ws)
    assert len(ws) == (1 if n <= L else 1 + -(-(m - (L - 2)) // stride))


def test_integer_sums_saturate_and_float_sums_do_not():
    big = lambda w: np.array([2 ** 31 - 1, -2 ** 31, len(w)], np.int32)
    got = W.run(big, list(range(300)), 64, 31)
    assert got.dtype == np.int32 and got.tolist()[:2] == [2 ** 31 - 1, -2 ** 31]
    assert W.run(lambda w: np.array([0.5]), list(range(300)), 64, 31).tolist() == [0.5 * 9]
    assert W.run(stub_logits, list(range(50)), 64, None).tolist() == stub_logits(list(range(50))).tolist()
    for bad in ((64, 0, 300), (64, 63, 300), (64, 31, 63), (2, 1, 10)):
        with pytest.raises(W.WindowError):
            W.check(*bad)


DRIVER = r"""
#include <stdio.h>
#include "windows.h"
#include "tinylm_model.h"
int main(void) {
    static int32_t ids[4096], logits[3], wl[3]; static int64_t acc[3]; int32_t n, stride;
    while (scanf("%d %d", &stride, &n) == 2) {
        for (int32_t i = 0; i < n; i++) scanf("%d", &ids[i]);
        int32_t count = tinylm_windows_run(ids, n, tinylm_model_info.max_tokens, stride, 3, logits, wl, acc);
        printf("%d %d %d %d", count, logits[0], logits[1], logits[2]);
        for (int32_t i = 0; i < n; i++) printf(" %d", ids[i]);      /* restored? */
        printf("\n");
    }
    return 0;
}
"""


@pytest.mark.skipif(CC is None, reason="no host C compiler")
def test_runtime_windows_equal_the_spec_on_the_host(tmp_path):
    drv = tmp_path / "drv.c"
    drv.write_text(DRIVER)
    exe = tmp_path / "drv"
    subprocess.run([CC, "-std=c11", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    f"-I{RUNTIME}", str(drv), str(RUNTIME / "windows.c"), str(STUB), "-o", str(exe)], check=True)
    rng = np.random.default_rng(0)
    cases = [(31, 2), (31, 64), (31, 65), (31, 66), (62, 500), (1, 70), (20, 1000), (31, 4096)]
    cases += [(int(rng.integers(1, 63)), int(rng.integers(2, 900))) for _ in range(20)]
    inputs = [(s, [int(x) for x in rng.integers(0, 1000, n)]) for s, n in cases]
    r = subprocess.run([str(exe)], input="".join(f"{s} {len(ids)} " + " ".join(map(str, ids)) + "\n"
                                                 for s, ids in inputs),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    for (s, ids), line in zip(inputs, r.stdout.splitlines(), strict=True):
        v = list(map(int, line.split()))
        assert v[0] == len(W.windows(ids, 64, s))
        assert v[1:4] == W.run(stub_logits, ids, 64, s).tolist()
        assert v[4:] == ids                                           # the input is left as it was


arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                         reason="arm-none-eabi-gcc / qemu-system-arm not installed")


@arm
def test_firmware_runs_windows_in_qemu_and_refuses_longer(tmp_path):
    from codegen import toolchain
    from tinylm.harness.device import Device, DeviceError
    from tinylm.harness.qemu import QemuBoard
    board = toolchain.load_board("qemu-m4")
    defines = {"TINYLM_INPUT_MAX": 300, "TINYLM_WINDOW_STRIDE": 20, "TINYLM_LABELS_MAX": 3}
    elf = toolchain.compile_firmware(toolchain.firmware_sources(board, [STUB]),
                                     toolchain.firmware_include_dirs(board), board, tmp_path, defines=defines)
    rng = np.random.default_rng(1)
    with QemuBoard(board, elf) as q, Device(q.url, timeout=10) as d:
        info = d.info()
        assert info["maxlen"] == 300 and info["window"] == 20
        for n in (5, 64, 65, 130, 300):
            ids = [int(x) for x in rng.integers(0, 1000, n)]
            assert d.infer(ids) == W.run(stub_logits, ids, 64, 20).tolist()
        with pytest.raises(DeviceError, match="2..600"):
            d.load(list(range(301)))
        assert d.infer([1, 2, 3]) == stub_logits([1, 2, 3]).tolist()      # still serving


@arm
def test_bundled_model_with_windows_is_bit_exact_in_qemu(tmp_path):
    """`tinylm build --windows` and `tinylm eval` on long inputs: device = spec on the reference."""
    import json
    import gzip
    from typer.testing import CliRunner
    from tinylm.cli import app
    from tinylm import graph as G
    g = G.load(ROOT / "models" / "default.onnx")                      # emotion, L = 64
    out = tmp_path / "b"
    r = CliRunner().invoke(app, ["build", str(ROOT / "models" / "default.onnx"), "--board", "qemu-m4",
                                 "--out", str(out), "--windows", "31", "--max-input", "200"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "build.json").read_text())["windows"] == {"stride": 31, "max_input": 200}
    from tinylm.harness.evaluate import DeviceEngine
    assert DeviceEngine(out, timeout=30.0).timeout == 30.0 * 6     # 200 ids: 6 windows in one infer
    # long texts: emotion sentences joined, so most need 2-4 windows
    from tinynlp_data import load_split
    val = load_split("emotion", "validation") if _has_data() else None
    rows = ([{"id": i, "text": " ".join(e.text for e in val[4 * i:4 * i + 4]), "label": val[4 * i].label}
             for i in range(6)] if val else
            [{"id": i, "text": " ".join(["i feel so happy and calm today"] * (i + 5)), "label": 1} for i in range(6)])
    data = tmp_path / "long.jsonl.gz"
    with gzip.open(data, "wt") as f:
        f.writelines(json.dumps(x) + "\n" for x in rows)
    res_json = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["eval", str(out), "--task", "emotion", "--data", str(data), "--json", str(res_json)])
    assert r.exit_code == 0, r.output
    res = json.loads(res_json.read_text())
    assert res["mismatches"] == 0 and res["examples"] == 6
    recs = [json.loads(x) for x in open(str(res_json) + ".progress.jsonl")][1:]
    assert max(x["tokens"] for x in recs) > g.max_len                 # some really were windowed
    # the reference with the same windows, from the CLI, scores the same
    r = CliRunner().invoke(app, ["eval", str(out / "model.onnx"), "--task", "emotion", "--data", str(data),
                                 "--windows", "31", "--max-input", "200", "--json", str(tmp_path / "ref.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ref.json").read_text())["score"] == res["score"]


def _has_data():
    try:
        from tinynlp_data import find_data_dir
        find_data_dir()
        return True
    except Exception:
        return False


def test_cli_window_options_are_checked(tmp_path):
    from typer.testing import CliRunner
    from tinylm.cli import app
    model = str(ROOT / "models" / "default.onnx")
    r = CliRunner().invoke(app, ["build", model, "--board", "qemu-m4", "--out", str(tmp_path / "a"), "--windows", "31"])
    assert r.exit_code != 0 and "go together" in r.output
    r = CliRunner().invoke(app, ["build", model, "--board", "qemu-m4", "--out", str(tmp_path / "a"),
                                 "--windows", "70", "--max-input", "200", "--no-compile"])
    assert r.exit_code != 0 and "stride 70 must be in 1..62" in r.output
    r = CliRunner().invoke(app, ["eval", model, "--task", "emotion", "--windows", "31", "--max-input", "10"])
    assert r.exit_code != 0 and "below the model's L = 64" in r.output


def test_finetune_with_windows_validates_as_eval_scores(tmp_path):
    """finetune --windows: training sees random windows of long texts; its validation score is
    what `tinylm eval RUN --windows` gives (the same summed windows), and shorter truncation
    would see only the start."""
    import dataclasses
    import json
    from typer.testing import CliRunner
    from conftest import toy_bundle, toy_examples
    from tinylm.cli import app
    # the label words sit at the end of a long text: only windows reach them
    long = lambda e: dataclasses.replace(e, text=" ".join(["the"] * 40) + " " + e.text)
    train = [long(e) for e in toy_examples(64, 0)]
    val = [long(e) for e in toy_examples(24, 1)]
    data = toy_bundle(tmp_path, "limit", train, val)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["finetune", "--from-scratch", "--model", "embbert-nano", "--task", "limit",
                                 "--out", str(out), "--max-len", "16", "--windows", "7", "--max-input", "64",
                                 "--epochs", "2", "--patience", "0", "--lr", "3e-3", "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "run.json").read_text())
    assert meta["finetune"]["window_stride"] == 7 and meta["finetune"]["max_input"] == 64
    res = tmp_path / "e.json"
    r = CliRunner().invoke(app, ["eval", str(out), "--task", "limit", "--data-dir", str(data), "--windows", "7",
                                 "--max-input", "64", "--json", str(res)])
    assert r.exit_code == 0, r.output
    assert json.loads(res.read_text())["score"] == pytest.approx(meta["validation_score"])
    r = CliRunner().invoke(app, ["finetune", "--from-scratch", "--task", "limit", "--out", str(tmp_path / "x"),
                                 "--windows", "7", "--data-dir", str(data)])
    assert r.exit_code == 2 and "go together" in r.output
    r = CliRunner().invoke(app, ["finetune", "--from-scratch", "--task", "limit", "--out", str(tmp_path / "y"),
                                 "--max-len", "16", "--windows", "20", "--max-input", "64", "--data-dir", str(data)])
    assert r.exit_code == 2 and "stride 20 must be in 1..14" in r.output


def test_finetune_refuses_windows_on_a_sentence_pair_task(tmp_path):
    """Windows are for single long texts: a pair task with --windows is a clear error, before
    any training."""
    from tinynlp_data import Example
    from tinylm.train.finetune import FinetuneConfig, FinetuneError, finetune
    pairs = [Example(i, "a b c", "a c d", i % 2) for i in range(8)]
    cfg = FinetuneConfig(epochs=1, max_len=16, window_stride=7, max_input=64)
    with pytest.raises(FinetuneError, match="sentence-pair task"):
        finetune(None, "mrpc", tmp_path / "p", cfg, model="embbert-nano", train_examples=pairs, val_examples=pairs)
    assert not (tmp_path / "p" / "run.json").exists()
