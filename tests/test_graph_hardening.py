"""Malformed models are refused at load with one line naming the node and the attribute (or the
table and the id that indexes it). Each case is listed, with its message, in docs/hardening.md."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tinylm import graph as G
from tinylm.graph import reference

from conftest import DEFAULT_MODEL, TINY_MODEL

_MODELS = {}


def _model(path):
    if path not in _MODELS:
        _MODELS[path] = onnx.load(str(path))
    m = onnx.ModelProto()
    m.CopyFrom(_MODELS[path])
    return m


def set_meta(key, value):
    def f(m):
        for p in m.metadata_props:
            if p.key == "tinylm." + key:
                p.value = value
                return
        e = m.metadata_props.add()
        e.key, e.value = "tinylm." + key, value
    return f


def set_attr(node_name, attr, value):
    def f(m):
        node = next(n for n in m.graph.node if n.name == node_name)
        for i, a in enumerate(node.attribute):
            if a.name == attr:
                del node.attribute[i]
                break
        node.attribute.append(helper.make_attribute(attr, value))
    return f


def map_weight(name, fn):
    def f(m):
        for i, t in enumerate(m.graph.initializer):
            if t.name == name:
                m.graph.initializer[i].CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t)), name))
                return
        raise KeyError(name)
    return f


def add_weight(name, array):
    def f(m):
        m.graph.initializer.append(numpy_helper.from_array(array, name))
    return f


def rename_weight(old, new):
    def f(m):
        for t in m.graph.initializer:
            if t.name == old:
                t.name = new
        for n in m.graph.node:
            for i, x in enumerate(n.input):
                if x == old:
                    n.input[i] = new
    return f


D, T = DEFAULT_MODEL, TINY_MODEL
# (id, model, mutation, fragments the one-line message must contain)
CASES = [
    # tables against the ids that index them
    ("vocab-over-embedding", D, set_meta("vocab", "9000"),
     ["'embed.tok.gather' (Gather)", "'embed.tok_table' has 8192 rows", "token ids up to 8999"]),
    ("segment-table-short", D, map_weight("embed.seg_table", lambda w: w[:2]),
     ["'embed.seg' (Gather)", "has 2 rows", "segment ids up to 2"]),
    ("position-table-short", T, map_weight("pos_emb", lambda w: w[:32]),
     ["'embed.pos' (Gather)", "has 32 rows", "positions up to 63"]),
    ("max-len-over-positions", T, set_meta("max_len", "100"),
     ["'embed.pos' (Gather)", "has 64 rows", "positions up to 99"]),
    ("tokenizer-over-vocab", T, set_meta("vocab", "4000"), ["tokenizer", "8191", "tinylm.vocab 4000"]),
    # attribute ranges of tinylm/graph/ops.py
    ("addint8-ma-2^31", D, set_attr("embed.tokpos", "ma", 2 ** 31),
     ["'embed.tokpos' (AddInt8)", "attribute ma = 2147483648", "|ma| < 2**31"]),
    ("addint8-mb--2^31", D, set_attr("embed.tokpos", "mb", -2 ** 31),
     ["'embed.tokpos' (AddInt8)", "attribute mb", "|mb| < 2**31"]),
    ("addint8-shift-0", D, set_attr("embed.tokpos", "shift", 0), ["'embed.tokpos' (AddInt8)", "attribute shift = 0", "1..62"]),
    ("addint8-shift-64", D, set_attr("embed.tokpos", "shift", 64), ["(AddInt8)", "attribute shift = 64", "1..62"]),
    ("addint8-float-ma", D, set_attr("embed.tokpos", "ma", 1.5), ["(AddInt8)", "attribute ma", "integer"]),
    ("softmax-mult-2^31", T, set_attr("block0.softmax", "multiplier", 2 ** 31),
     ["'block0.softmax' (SoftmaxInt)", "attribute multiplier = 2147483648", "[0, 2**31)"]),
    ("softmax-mult-negative", T, set_attr("block0.softmax", "multiplier", -5),
     ["'block0.softmax' (SoftmaxInt)", "attribute multiplier = -5", "[0, 2**31)"]),
    ("softmax-shift-0", T, set_attr("block0.softmax", "shift", 0), ["(SoftmaxInt)", "attribute shift = 0"]),
    ("softmax-shift-63", T, set_attr("block0.softmax", "shift", 63), ["(SoftmaxInt)", "attribute shift = 63"]),
    ("softmax-empty-exp-table", T, map_weight("exp_lut", lambda w: w[:0]), ["(SoftmaxInt)", "exp table", "empty"]),
    ("rmsnorm-mult-2^31", D, set_attr("layer0.norm", "multiplier", 2 ** 31),
     ["'layer0.norm' (RMSNormInt)", "attribute multiplier = 2147483648"]),
    ("rmsnorm-shift-64", D, set_attr("layer0.norm", "shift", 64), ["'layer0.norm' (RMSNormInt)", "attribute shift = 64"]),
    ("attention-out-shift-0", D, set_attr("layer0.att", "out_shift", 0), ["'layer0.att' (AttentionInt)", "out_shift = 0"]),
    ("requantize-shift-63", D, map_weight("embed.tok.s", lambda s: s * 0 + 63),
     ["'embed.tok' (Requantize)", "shift in 1..62"]),
    ("conv-no-taps", D, map_weight("layer0.conv.w", lambda w: w[:0]), ["'layer0.conv.acc' (CausalDepthwiseConvInt)", "k >= 1"]),
    # metadata and weights
    ("vocab-not-int", T, set_meta("vocab", '"lots"'), ["metadata tinylm.vocab", "integer"]),
    ("vocab-over-uint16", T, set_meta("vocab", "70000"), ["metadata tinylm.vocab = 70000", "1..65536"]),
    ("max-len-0", T, set_meta("max_len", "0"), ["metadata tinylm.max_len = 0", "1..65536"]),
    ("labels-not-list", T, set_meta("label_names", '"joy"'), ["metadata tinylm.label_names", "list of strings"]),
    ("float-weight", T, add_weight("stray", np.ones(3, np.float32)), ["weight 'stray'", "float32"]),
    ("int64-weight-too-big", T, add_weight("big", np.array([2 ** 40], np.int64)), ["weight 'big'", "int32"]),
    ("weight-named-input", T, add_weight(G.INPUT, np.zeros(3, np.int32)), ["weight 'input_ids'", "input"]),
]


def _load_error(tmp_path, path, mutate) -> str:
    m = _model(path)
    mutate(m)
    p = tmp_path / "bad.onnx"
    onnx.save(m, str(p))
    with pytest.raises(G.GraphError) as e:
        G.load(p)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert str(p) in msg
    return msg


@pytest.mark.parametrize("path,mutate,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_model_is_refused_with_one_line(tmp_path, path, mutate, fragments):
    msg = _load_error(tmp_path, path, mutate)
    for frag in fragments:
        assert frag in msg, msg


def test_gather_with_unbounded_index_is_refused(tmp_path):
    """A table indexed by a computed int32 tensor has no proven index range: refused by name."""
    b = G.GraphBuilder()
    ids2 = b.op("Add", [b.op("PositionIds", [G.INPUT], "pos"), b.const("one", np.ones(1, np.int32))], "shifted")
    x = b.op("Gather", [b.const("table", np.ones((4, 8), np.int8)), ids2], "lookup")
    cls = b.op("Gather", [x, b.const("cls_index", np.array([0], np.int32))], "cls")
    b.op("MatMulInteger", [cls, b.const("head.w", np.ones((8, 2), np.int8))], G.OUTPUT)
    p = tmp_path / "idx.onnx"
    G.save(b.to_model(2, {"name": "idx", "max_len": 4, "vocab": 4, "label_names": ["a", "b"], "tokenizer": "{}"}), p)
    with pytest.raises(G.GraphError, match=r"'lookup' \(Gather\): cannot bound the index 'shifted'"):
        G.load(p)


def test_shape_check_probes_cover_segments_lengths_and_vocab():
    """The inputs the load-time check runs reach segment 2, the largest token id, length 1 and L."""
    g = G.read(TINY_MODEL)
    probes = reference.probe_inputs(g)
    lengths = {len(p) for p in probes}
    assert {1, 2, g.max_len} <= lengths
    assert any(p.max() == g.vocab - 1 for p in probes) and any(p.min() == 0 for p in probes)
    from tinylm.graph import ops
    assert any((ops.segment_ids(p) == 2).any() for p in probes)


@pytest.mark.parametrize("path", [DEFAULT_MODEL, TINY_MODEL], ids=["default", "tiny"])
def test_good_models_still_load(path):
    assert G.load(path).vocab == 8192
