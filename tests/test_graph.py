"""Model files: the bundled one loads and checks; broken ones give one-line errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tinylm import graph as G
from tinylm.graph import reference

from conftest import DEFAULT_MODEL, TINY_MODEL


@pytest.mark.parametrize("path", [DEFAULT_MODEL, TINY_MODEL], ids=["default", "tiny"])
def test_bundled_models_pass_checker_and_carry_metadata(path):
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    g = G.load(path)
    assert g.meta["format_version"] == G.FORMAT_VERSION
    assert g.label_names == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert g.meta["tokenizer"].lstrip().startswith("{")
    assert {n.op for n in g.nodes} <= set(G.OPS)
    assert reference.run(g, [2, 100, 4]).dtype == np.int32


def _write(model, path):
    onnx.save(model, str(path))
    return path


def _error(path) -> str:
    with pytest.raises(G.GraphError) as e:
        G.load(path)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_truncated_file(tmp_path):
    p = tmp_path / "cut.onnx"
    p.write_bytes(DEFAULT_MODEL.read_bytes()[:5000])
    assert "truncated or corrupt" in _error(p)


def test_missing_file(tmp_path):
    assert "cannot read" in _error(tmp_path / "nope.onnx")


def test_wrong_version(tmp_path):
    m = onnx.load(str(DEFAULT_MODEL))
    for p in m.metadata_props:
        if p.key == "tinylm.format_version":
            p.value = "99"
    assert "format version 99 is not supported" in _error(_write(m, tmp_path / "v.onnx"))


def test_unknown_op_names_the_node(tmp_path):
    m = onnx.load(str(DEFAULT_MODEL))
    m.graph.node[3].op_type = "Frobnicate"
    name = m.graph.node[3].name
    msg = _error(_write(m, tmp_path / "op.onnx"))
    assert "unsupported op" in msg and name in msg and "Frobnicate" in msg


def test_shape_mismatch_names_the_node(tmp_path):
    m = onnx.load(str(TINY_MODEL))
    inits = {t.name: i for i, t in enumerate(m.graph.initializer)}
    i = inits["block0.q.w"]
    w = numpy_helper.to_array(m.graph.initializer[i])
    m.graph.initializer[i].CopyFrom(numpy_helper.from_array(w[:-1], "block0.q.w"))
    msg = _error(_write(m, tmp_path / "shape.onnx"))
    assert "block0.q.mm" in msg and "shape mismatch" in msg


def test_cli_refuses_bad_model_with_one_line(tmp_path):
    p = tmp_path / "cut.onnx"
    p.write_bytes(DEFAULT_MODEL.read_bytes()[:100])
    r = subprocess.run([sys.executable, "-m", "tinylm", "build", str(p), "--board", "qemu-m4",
                        "--out", str(tmp_path / "b"), "--no-compile"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "not a valid ONNX file" in r.stderr
    assert "Traceback" not in r.stderr


def test_reference_rejects_out_of_range_ids():
    g = G.load(DEFAULT_MODEL)
    with pytest.raises(ValueError, match="token id 9000 at 1 >= vocab 8192"):
        reference.run(g, [2, 9000])
    with pytest.raises(ValueError):
        reference.run(g, [2] * (g.max_len + 1))


def test_tokenizer_is_stored_compressed_and_self_contained():
    """The model carries its tokenizer xz-compressed (a third of the JSON's size); loading gives
    back the exact JSON, so the one file is all that build and eval need."""
    from tinylm.tokenizer import load_tokenizer
    model = onnx.load(str(DEFAULT_MODEL))
    meta = {p.key: p.value for p in model.metadata_props}
    assert "tinylm.tokenizer" not in meta
    packed = meta["tinylm." + G.format.TOKENIZER_XZ]
    g = G.load(DEFAULT_MODEL)
    assert len(packed) < len(g.meta["tokenizer"]) / 2
    assert load_tokenizer(g.meta["tokenizer"]).encode("i feel happy").ids


def test_plain_json_tokenizer_of_older_files_still_loads(tmp_path):
    m = onnx.load(str(DEFAULT_MODEL))
    want = G.load(DEFAULT_MODEL).meta["tokenizer"]
    for p in m.metadata_props:
        if p.key == "tinylm." + G.format.TOKENIZER_XZ:
            p.key, p.value = "tinylm.tokenizer", want
    assert G.load(_write(m, tmp_path / "old.onnx")).meta["tokenizer"] == want


def test_corrupt_compressed_tokenizer(tmp_path):
    m = onnx.load(str(DEFAULT_MODEL))
    for p in m.metadata_props:
        if p.key == "tinylm." + G.format.TOKENIZER_XZ:
            p.value = p.value[:200]
    assert "tokenizer.xz is corrupt" in _error(_write(m, tmp_path / "tok.onnx"))
