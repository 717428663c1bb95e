"""EmbBERT-Q end to end on the host: float forward of the quantizer == Flax, the quantized graph
runs in the reference, generated C (compiled with ASan+UBSan) gives the reference's logits bit for
bit at lengths 1..L, row tiles keep the arena at about 2 L d, and overflow-prone models are refused.

Uses a small randomly initialised EmbBERT (d 32, L 48, k 8) so the whole file runs in seconds."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from codegen import emit  # noqa: E402
from tinylm.models import embbert
from tinylm import graph as G
from tinylm.graph import ops
from tinylm.quant import embbert as QE
from tinylm.graph import reference

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(type="embbert", vocab_size=8192, max_len=48, d=32, r=8, layers=2, kernel=8,
           dropout=0.0, residual=False)
LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = embbert.classifier_from_config(CFG, len(LABELS))
    params = m.init(jax.random.PRNGKey(3), np.zeros((1, 8), np.int32))["params"]
    rng = np.random.default_rng(0)
    seqs = [[2] + list(rng.integers(5, 8192, n)) + [4] for n in (3, 10, 46, 20)]
    seqs[1][4] = 4   # a pair: segment 2 after the first [SEP]
    onnx_model = QE.quantize_params(params, CFG, LABELS, seqs, name="embbert-q-test", task="emotion",
                                    tokenizer_json=(ROOT / "models" / "tokenizer-8192.json").read_text())
    path = tmp_path_factory.mktemp("eq") / "m.onnx"
    G.save(onnx_model, path)
    return m, params, G.load(path), seqs


def test_float_forward_matches_flax(model):
    m, params, _, seqs = model
    for s in seqs:
        want = np.asarray(m.apply({"params": params}, np.array([s], np.int32)))[0]
        got, _ = QE.forward(QE._np(params), CFG, s)
        assert np.abs(got - want).max() < 1e-4


def test_reference_close_to_float(model):
    _, params, g, seqs = model
    for s in seqs:
        f, _ = QE.forward(QE._np(params), CFG, s)
        q = reference.run(g, s) * g.meta["logit_scale"]
        assert np.abs(q - f).max() < 0.15 * max(1.0, np.abs(f).max())


def test_graph_uses_embbert_ops(model):
    ops_used = {n.op for n in model[2].nodes}
    assert {"SegmentIds", "AttentionInt", "CausalDepthwiseConvInt", "RMSNormInt", "Lut", "AddInt8"} <= ops_used
    assert "SoftmaxInt" not in ops_used and "Transpose" not in ops_used   # no n x n matrix


def test_weighted_difference_has_negative_mb(model):
    outs = [n for n in model[2].nodes if n.name.endswith(".out")]
    assert outs and all(n.attrs["mb"] < 0 < n.attrs["ma"] for n in outs)


def _host_build(g, out: Path) -> Path:
    low = emit.lower(g)
    (out / "model.c").write_text(low.model_c)
    (out / "weights.c").write_text(low.weights_c)
    (out / "weights.h").write_text(low.weights_h)
    srcs = [str(p) for p in sorted((ROOT / "firmware" / "kernels").glob("*.c"))]
    srcs += [str(out / "model.c"), str(out / "weights.c"), str(ROOT / "tests" / "fixtures" / "host_model_main.c")]
    exe = out / "host_model"
    subprocess.run(["gcc", "-std=c99", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'firmware' / 'kernels'}",
                    f"-I{ROOT / 'firmware' / 'runtime'}", f"-I{out}", *srcs, "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    return exe


def test_host_c_bit_exact_with_reference(model, tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("no host gcc")
    g = model[2]
    exe = _host_build(g, tmp_path)
    rng = np.random.default_rng(5)
    inputs = [[2] + list(rng.integers(5, g.vocab, n - 1)) for n in (1, 2, 3, 9, 31, 47, g.max_len)]
    inputs[3][3] = 4
    inputs[4][2] = inputs[4][7] = 4
    inputs.append([2, 4])                                     # an empty text: [CLS] [SEP]
    txt = "".join(f"{len(s)} " + " ".join(map(str, s)) + "\n" for s in inputs)
    r = subprocess.run([str(exe)], input=txt, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = [list(map(int, line.split())) for line in r.stdout.splitlines()]
    assert got == [reference.run(g, s).tolist() for s in inputs]


def test_row_tiles_keep_the_arena_near_two_activations(model):
    g = model[2]
    low = emit.lower(g)
    L, d = g.max_len, CFG["d"]
    # h and the next layer's h (2 L d int8) + tiles + attention scratch + the two [n] index tensors
    assert low.arena_bytes <= 2 * L * d + 4 * (L + d) + 16 * d + 8 * L + 256
    assert "for (int32_t r0 = 0; r0 < n; r0 += 1)" in low.model_c


def test_segment_ids_match_float_model():
    ids = np.array([[2, 7, 4, 9, 4, 5]])
    assert ops.segment_ids(ids[0]).tolist() == np.asarray(embbert.segments_from_ids(ids))[0].tolist()


def test_overflowing_attention_is_refused_with_the_node_named(model):
    g = model[2]
    node = next(n for n in g.nodes if n.op == "AttentionInt")
    big = G.Graph(g.nodes, g.weights, dict(g.meta, max_len=200_000), g.sha256)
    shapes = reference.shape_templates(g)
    with pytest.raises(emit.BoundError, match=node.name):
        emit.check_bounds(big, shapes)


def test_overflowing_conv_is_refused_with_the_node_named(model):
    g = model[2]
    node = next(n for n in g.nodes if n.op == "CausalDepthwiseConvInt")
    w = dict(g.weights)
    w[node.inputs[2]] = np.full_like(w[node.inputs[2]], 2**31 - 100)
    with pytest.raises(emit.BoundError, match=node.name.replace(".", r"\.")):
        emit.check_bounds(G.Graph(g.nodes, w, g.meta, g.sha256), reference.shape_templates(g))


def test_long_and_empty_text_are_encoded_like_the_host(model):
    """Every engine (float, reference, device) encodes with tokenizer.encode at the model's L:
    a long text is cut to exactly L tokens, an empty one is [CLS] [SEP]; both get logits."""
    from tinylm.tokenizer import encode, load_tokenizer
    g = model[2]
    tok = load_tokenizer(ROOT / "models" / "tokenizer-8192.json")
    long_ids = encode(tok, "the cat sat on the mat " * 200, None, g.max_len)
    empty = encode(tok, "", None, g.max_len)
    assert len(long_ids) == g.max_len and long_ids[-1] == 4
    assert empty == [2, 4]
    for ids in (long_ids, empty):
        assert reference.run(g, ids).shape == (len(LABELS),)
    with pytest.raises(ValueError):
        reference.run(g, long_ids + [5])


def test_quantize_cli_dispatches_on_arch(model, tmp_path):
    """`tinylm quantize <embbert run>` goes to quantize_embbert (calibrated on train examples)."""
    import json
    from flax import serialization
    from typer.testing import CliRunner
    from tinylm.cli import app
    try:
        from tinynlp_data import load_split
        load_split("emotion", "train")
    except Exception as e:  # noqa: BLE001 -- the data bundle is optional for this test
        pytest.skip(f"emotion data not available: {e}")
    _, params, _, _ = model
    run = tmp_path / "run"
    run.mkdir()
    (run / "params.msgpack").write_bytes(serialization.to_bytes(params))
    shutil.copy(ROOT / "models" / "tokenizer-8192.json", run / "tokenizer.json")
    (run / "run.json").write_text(json.dumps({"arch": "embbert", "config": CFG, "task": "emotion",
                                              "label_names": LABELS, "max_len": CFG["max_len"]}))
    out = tmp_path / "q.onnx"
    r = CliRunner().invoke(app, ["quantize", str(run), "--out", str(out), "--calib", "8"])
    assert r.exit_code == 0, r.output
    g = G.load(out)
    assert g.meta["arch"] == "embbert" and g.max_len == CFG["max_len"]
    r = CliRunner().invoke(app, ["quantize", str(run), "--out", str(tmp_path / "s.onnx"), "--calib", "8",
                                 "--max-len", "20"])
    assert r.exit_code == 0, r.output
    assert G.load(tmp_path / "s.onnx").max_len == 20
    r = CliRunner().invoke(app, ["quantize", str(run), "--out", str(tmp_path / "l.onnx"), "--max-len", "999"])
    assert r.exit_code != 0 and "exceeds the model's position table" in r.output


def _content_digest(g) -> str:
    """sha256 of what a graph computes and carries: nodes with attributes, every weight (name,
    dtype, shape, bytes), the metadata (tokenizer as JSON); not how the file stores them."""
    import hashlib
    import json
    h = hashlib.sha256()
    for n in g.nodes:
        h.update(repr((n.op, n.inputs, n.outputs, n.name, sorted(n.attrs.items()))).encode())
    for k in sorted(g.weights):
        w = np.ascontiguousarray(g.weights[k])
        h.update(repr((k, w.dtype.str, w.shape)).encode() + w.tobytes())
    h.update(json.dumps(g.meta, sort_keys=True).encode())
    return h.hexdigest()


# PTQ of models/embbert-emotion as committed until 2026-12-02 (models/embbert-q-emotion.onnx
# then; `tinylm quantize models/embbert-emotion --out q.onnx --name embbert-q-emotion`): the
# re-quantization after the spec moved to xp backends gave exactly this graph.
PTQ_EMBBERT_EMOTION = "cc64ddf66b52e49468225fc033f25fc033ee13d4ed1545fe226bab30160640b6"


def test_requantizing_the_committed_run_reproduces_the_golden_graph(tmp_path):
    """Golden test of the whole quantizer: PTQ of models/embbert-emotion gives exactly the graph
    it gave when it was committed (nodes, attributes, every weight, the metadata)."""
    from tinynlp_data import DataError, find_data_dir
    try:
        find_data_dir(None)
    except DataError as e:
        pytest.skip(str(e))
    out = tmp_path / "q.onnx"
    QE.quantize_run(ROOT / "models" / "embbert-emotion", out, name="embbert-q-emotion")
    assert _content_digest(G.load(out)) == PTQ_EMBBERT_EMOTION
