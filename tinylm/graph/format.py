"""The quantized graph as an ONNX file: how it is written, read and checked.

Standard ONNX ops are used where ONNX defines the exact integer result (Gather, MatMulInteger,
Add on int32, Transpose); the rest live in the custom domain `ai.tinylm` (see tinylm/graph/ops.py for
the integer semantics of each, and docs/graph.md for the format).

Metadata (model.metadata_props): tinylm.format_version, tinylm.name, tinylm.task,
tinylm.label_names (JSON), tinylm.max_len, tinylm.tokenizer.xz (the tokenizer JSON, xz-compressed
and base64-encoded: 90 KB instead of 215 KB; files that hold plain JSON under tinylm.tokenizer
still load),
tinylm.logit_scale (float: real logit = int logit * scale), tinylm.arch.
"""
from __future__ import annotations

import base64
import hashlib
import json
import lzma
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FORMAT_VERSION = 1
DOMAIN = "ai.tinylm"
OPSET = 17
INPUT = "input_ids"
OUTPUT = "logits"
RAW_KEYS = {"tokenizer", "name", "task", "arch", "quantization"}   # metadata kept as plain strings
TOKENIZER_XZ = "tokenizer.xz"

# op type -> (domain, number of inputs, required attributes)
OPS = {
    "Gather": ("", 2, ()),
    "MatMulInteger": ("", 2, ()),
    "Add": ("", 2, ()),
    "Transpose": ("", 1, ()),
    "Requantize": (DOMAIN, 3, ()),
    "AddInt8": (DOMAIN, 2, ("ma", "mb", "shift")),
    "PositionIds": (DOMAIN, 1, ()),
    "Lut": (DOMAIN, 2, ()),
    "SoftmaxInt": (DOMAIN, 2, ("multiplier", "shift")),
    "RMSNormInt": (DOMAIN, 2, ("multiplier", "shift")),
    # EmbBERT-Q
    "SegmentIds": (DOMAIN, 1, ()),
    "AttentionInt": (DOMAIN, 3, ("multiplier", "shift", "out_multiplier", "out_shift")),
    "CausalDepthwiseConvInt": (DOMAIN, 3, ()),
    # binary (BiPFT-style): bit-packed uint32 operands, 32 values per word (ops.binarize_int)
    "BinarizeInt": (DOMAIN, 2, ()),
    "BinaryMatMulInt": (DOMAIN, 2, ("k",)),
    "BinaryMaskMatMulInt": (DOMAIN, 2, ()),
}

# The documented domain of every integer attribute (tinylm/graph/ops.py docstrings): outside it
# the C kernels and the reference disagree (a multiplier >= 2**31 wraps in an int32 parameter) or
# C has undefined behaviour (a shift of 0 or >= 64). attr -> (lowest, highest, as the docs say it).
_M31 = (0, 2 ** 31 - 1, "[0, 2**31)")
_SHIFT = (1, 62, "1..62")
ATTR_RANGES = {
    "Gather": {"axis": (0, 0, "only 0")},
    "AddInt8": {"ma": (-2 ** 31 + 1, 2 ** 31 - 1, "|ma| < 2**31"),
                "mb": (-2 ** 31 + 1, 2 ** 31 - 1, "|mb| < 2**31"), "shift": _SHIFT},
    "SoftmaxInt": {"multiplier": _M31, "shift": _SHIFT},
    "RMSNormInt": {"multiplier": _M31, "shift": _SHIFT},
    "AttentionInt": {"multiplier": _M31, "shift": _SHIFT, "out_multiplier": _M31, "out_shift": _SHIFT},
    "BinaryMatMulInt": {"k": (1, 2 ** 31 - 1, "1..2**31-1")},
    "BinarizeInt": {"words": (1, 2 ** 26, "1..2**26")},
}
# Token ids travel as little-endian uint16 (docs/protocol.md), so V <= 65536; SoftmaxInt's uint32
# sum needs rows of < 65537 columns, which bounds L the same way.
META_INT_RANGES = {"vocab": (1, 65536), "max_len": (1, 65536)}
# dtypes the C side has a type for (codegen/emit.py CTYPE); int64 only as indices that fit int32
WEIGHT_DTYPES = {np.dtype(np.int8), np.dtype(np.int32), np.dtype(np.uint16), np.dtype(np.int64),
                 np.dtype(np.uint32)}   # uint32: bit-packed binary weights


class GraphError(ValueError):
    """A model file that cannot be used; the message is one line and names the node."""


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    name: str
    attrs: dict = field(default_factory=dict)


@dataclass
class Graph:
    """What the reference and codegen work on: nodes in execution order, constant tensors,
    and the metadata."""
    nodes: list[Node]
    weights: dict[str, np.ndarray]
    meta: dict
    sha256: str = ""

    @property
    def name(self) -> str:
        return self.meta.get("name", "model")

    @property
    def max_len(self) -> int:
        return int(self.meta["max_len"])

    @property
    def label_names(self) -> list[str]:
        return list(self.meta.get("label_names", []))

    @property
    def vocab(self) -> int:
        return int(self.meta["vocab"])


class GraphBuilder:
    """Collects nodes and initializers while a quantizer lowers a float model."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._names: set[str] = set()

    def const(self, name: str, array: np.ndarray) -> str:
        assert name not in self._names, name
        self._names.add(name)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        domain = OPS[op][0]
        out = name
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, domain=domain, **attrs))
        return out

    def to_model(self, num_labels: int, meta: dict) -> onnx.ModelProto:
        inp = helper.make_tensor_value_info(INPUT, TensorProto.INT32, ["n"])
        out = helper.make_tensor_value_info(OUTPUT, TensorProto.INT32, [1, num_labels])
        g = helper.make_graph(self.nodes, "tinylm", [inp], [out], initializer=self.inits)
        model = helper.make_model(g, producer_name="tinylm", opset_imports=[
            helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)])
        model.ir_version = 8
        full = {"format_version": FORMAT_VERSION, **meta}
        if "tokenizer" in full:
            full[TOKENIZER_XZ] = pack_tokenizer(full.pop("tokenizer"))
        for k, v in full.items():
            entry = model.metadata_props.add()
            entry.key = "tinylm." + k
            entry.value = v if isinstance(v, str) else json.dumps(v)
        onnx.checker.check_model(model)
        return model


def check_attrs(node: Node) -> str | None:
    """The first attribute of node outside its documented domain, as a message; None if all fit."""
    for key, (lo, hi, text) in ATTR_RANGES.get(node.op, {}).items():
        if key not in node.attrs:
            continue
        v = node.attrs[key]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            return f"node {node.name!r} ({node.op}): attribute {key} must be an integer, got {v!r}"
        if not lo <= v <= hi:
            return f"node {node.name!r} ({node.op}): attribute {key} = {v} is out of range ({text})"
    return None


def _check_meta(meta: dict, where: str) -> None:
    for key, (lo, hi) in META_INT_RANGES.items():
        v = meta[key]
        if not isinstance(v, int) or isinstance(v, bool):
            raise GraphError(f"{where}: metadata tinylm.{key} must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise GraphError(f"{where}: metadata tinylm.{key} = {v} is out of range {lo}..{hi}")
    labels = meta["label_names"]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise GraphError(f"{where}: metadata tinylm.label_names must be a JSON list of strings")
    scale = meta.get("logit_scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise GraphError(f"{where}: metadata tinylm.logit_scale must be a number, got {scale!r}")
    try:
        tok = json.loads(meta["tokenizer"])
    except json.JSONDecodeError:
        raise GraphError(f"{where}: metadata tinylm.tokenizer is not JSON") from None
    # the tokenizer must not produce an id the model cannot look up (the device would refuse
    # the example mid-run, the reference raise); HF tokenizers JSON: model.vocab + added_tokens
    tok = tok if isinstance(tok, dict) else {}
    vocab = tok.get("model", {}).get("vocab") if isinstance(tok.get("model"), dict) else None
    ids = list(vocab.values()) if isinstance(vocab, dict) else []
    added = tok.get("added_tokens")
    ids += [a.get("id") for a in added if isinstance(a, dict)] if isinstance(added, list) else []
    top = max((i for i in ids if isinstance(i, int)), default=-1)
    if top >= meta["vocab"]:
        raise GraphError(f"{where}: the tokenizer has token ids up to {top} but metadata "
                         f"tinylm.vocab {meta['vocab']} admits only ids < {meta['vocab']}")


def _check_weights(weights: dict, where: str) -> None:
    for name, w in weights.items():
        if name in (INPUT, OUTPUT):
            raise GraphError(f"{where}: weight {name!r} has the name of the graph's {'input' if name == INPUT else 'output'}")
        if w.dtype not in WEIGHT_DTYPES:
            raise GraphError(f"{where}: weight {name!r} has dtype {w.dtype}; allowed: int8, int32, uint16, "
                             "uint32 (bit-packed), int64 (indices within int32)")
        if w.dtype == np.int64 and w.size and (w.min() < -2 ** 31 or w.max() > 2 ** 31 - 1):
            raise GraphError(f"{where}: weight {name!r} (int64) has values outside int32, which C stores it as")


def pack_tokenizer(tokenizer_json: str) -> str:
    """The tokenizer JSON as stored in the model: xz, then base64 (metadata values are text)."""
    return base64.b64encode(lzma.compress(tokenizer_json.encode(), preset=9)).decode("ascii")


def unpack_tokenizer(value: str, where: str) -> str:
    try:
        return lzma.decompress(base64.b64decode(value, validate=True)).decode()
    except (ValueError, lzma.LZMAError, UnicodeDecodeError) as e:
        raise GraphError(f"{where}: metadata tinylm.{TOKENIZER_XZ} is corrupt ({type(e).__name__})") from None


def save(model: onnx.ModelProto, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def read(path: str | Path) -> Graph:
    """Reads a model file and checks its format (ONNX, ops, metadata). Every failure is a
    GraphError with one line. `tinylm.graph.load` adds the shape check by the reference."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise GraphError(f"{path}: cannot read model file ({e.strerror})") from None
    try:
        model = onnx.load_from_string(raw)
    except Exception as e:  # protobuf DecodeError and friends: a truncated or corrupt file
        raise GraphError(f"{path}: not a valid ONNX file (truncated or corrupt: {type(e).__name__})") from None
    for i, n in enumerate(model.graph.node):   # before the checker, so the message names the node
        if n.op_type not in OPS or OPS[n.op_type][0] != n.domain:
            raise GraphError(f"{path}: node {n.name or f'node{i}'!r}: unsupported op "
                             f"{n.domain or 'ai.onnx'}::{n.op_type}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid"
        raise GraphError(f"{path}: fails onnx.checker: {first}") from None
    meta = {}
    for p in model.metadata_props:
        if p.key.startswith("tinylm."):
            k = p.key[len("tinylm."):]
            if k == TOKENIZER_XZ:
                meta["tokenizer"] = unpack_tokenizer(p.value, str(path))
                continue
            if k in RAW_KEYS:
                meta[k] = p.value
                continue
            try:
                meta[k] = json.loads(p.value)
            except json.JSONDecodeError:
                meta[k] = p.value
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise GraphError(f"{path}: tinylm format version {version!r} is not supported "
                         f"(this tinylm reads version {FORMAT_VERSION})")
    for key in ("max_len", "vocab", "label_names", "tokenizer"):
        if key not in meta:
            raise GraphError(f"{path}: metadata tinylm.{key} is missing")
    _check_meta(meta, str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    _check_weights(weights, str(path))
    nodes = []
    for i, n in enumerate(model.graph.node):
        name = n.name or f"node{i}"
        domain, n_in, required = OPS[n.op_type]
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if len(n.input) != n_in or len(n.output) != 1:
            raise GraphError(f"{path}: node {name!r} ({n.op_type}): expected {n_in} inputs and 1 output")
        missing = [a for a in required if a not in attrs]
        if missing:
            raise GraphError(f"{path}: node {name!r} ({n.op_type}): missing attribute {missing[0]!r}")
        node = Node(n.op_type, list(n.input), list(n.output), name, attrs)
        bad = check_attrs(node)
        if bad:
            raise GraphError(f"{path}: {bad}")
        nodes.append(node)
    return Graph(nodes, weights, meta, hashlib.sha256(raw).hexdigest())
