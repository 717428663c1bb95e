"""Codegen: arena planning, overflow and budget refusals, and the golden test -- generated C
compiled on the host (ASan + UBSan) gives the integer reference's logits on real examples."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from codegen import emit, planner
from codegen.build import BudgetError, build
from tinylm import graph as G
from tinylm.graph import reference
from tinylm.tokenizer import encode, load_tokenizer
from tinynlp_data import load_split

from conftest import DEFAULT_MODEL, ROOT, TINY_MODEL


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 30), st.integers(0, 10)), min_size=1, max_size=40))
def test_planner_never_overlaps_live_buffers(specs):
    bufs = [planner.Buffer(f"t{i}", size, first, first + span) for i, (size, first, span) in enumerate(specs)]
    arena = planner.plan(bufs)
    planner.check(bufs)
    assert max(b.offset + b.size for b in bufs) <= arena
    assert all(b.offset % planner.ALIGN == 0 for b in bufs)


def test_planner_detects_overlap():
    a, b = planner.Buffer("a", 8, 0, 2, 0), planner.Buffer("b", 8, 1, 3, 4)
    with pytest.raises(AssertionError, match="overlap"):
        planner.check([a, b])


@pytest.mark.parametrize("path", [DEFAULT_MODEL, TINY_MODEL], ids=["default", "tiny"])
def test_arena_is_smaller_than_the_sum_of_activations(path):
    g = G.load(path)
    low = emit.lower(g)
    # every activation at full length L (row tiles make some buffers smaller than that)
    total = sum(emit.size_at(shp, g.max_len) * np.dtype(dt).itemsize
                for t, (shp, dt) in reference.shape_templates(g).items() if t != G.INPUT)
    assert low.arena_bytes < total / 4


@pytest.fixture(scope="module", params=[(DEFAULT_MODEL, 1), (DEFAULT_MODEL, 2), (DEFAULT_MODEL, 3), (TINY_MODEL, 1)],
                ids=["default", "default-2rows", "default-3rows", "tiny"])
def host_model(request, tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("host gcc not found")
    out = tmp_path_factory.mktemp("host_model")
    path, rows = request.param
    low = emit.lower(G.load(path), tile_rows=rows)   # row tiles of 2, 3: the kernels' row pairs
    (out / "model.c").write_text(low.model_c)
    (out / "weights.c").write_text(low.weights_c)
    (out / "weights.h").write_text(low.weights_h)
    kernels = sorted((ROOT / "firmware" / "kernels").glob("*.c"))
    exe = out / "model"
    subprocess.run([gcc, "-std=c99", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-Wall", "-Werror", f"-I{out}", f"-I{ROOT / 'firmware' / 'kernels'}",
                    f"-I{ROOT / 'firmware' / 'runtime'}", str(out / "model.c"), str(out / "weights.c"),
                    *map(str, kernels), str(ROOT / "tests" / "fixtures" / "host_model_main.c"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    return exe, path


def test_rows_per_pass_auto_follows_the_ram_budget(tmp_path):
    """--rows-per-pass auto: two rows where the board's RAM allows, one where only one fits."""
    from codegen import toolchain
    from codegen.build import RUNTIME_RAM_ESTIMATE, lower_rows
    g = G.load(DEFAULT_MODEL)
    board = dict(toolchain.load_board("qemu-m4"))
    low2, rows = lower_rows(g, board, "auto")
    low1, _ = lower_rows(g, board, 1)
    assert rows == 2 and low2.arena_bytes > low1.arena_bytes
    board["ram_bytes"] = low1.arena_bytes + board["stack_bytes"] + RUNTIME_RAM_ESTIMATE   # one row fits, two do not
    assert lower_rows(g, board, "auto")[1] == 1
    board["ram_bytes"] -= 8
    with pytest.raises(BudgetError):
        lower_rows(g, board, "auto")
    import json
    mem = build(None, "qemu-m4", tmp_path, compile=False, rows_per_pass=3)
    assert mem["rows_per_pass"] == 3 and json.loads((tmp_path / "memory.json").read_text())["rows_per_pass"] == 3
    assert "for (int32_t r0 = 0; r0 < n; r0 += 3)" in (tmp_path / "src" / "model.c").read_text()


def test_host_compiled_model_matches_reference_on_real_examples(host_model):
    host_model, path = host_model
    g = G.load(path)
    tok = load_tokenizer(g.meta["tokenizer"])
    examples = load_split("emotion", "validation")[:60]
    inputs = [encode(tok, e.text, None, g.max_len) for e in examples]
    rng = np.random.default_rng(0)
    inputs += [[2], [2, 4], list(rng.integers(5, g.vocab, g.max_len))]   # shortest, longest
    stdin = "".join(f"{len(ids)} {' '.join(map(str, ids))}\n" for ids in inputs)
    r = subprocess.run([str(host_model)], input=stdin, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = [list(map(int, line.split())) for line in r.stdout.splitlines()]
    assert len(got) == len(inputs)
    for ids, logits in zip(inputs, got):
        assert logits == reference.run(g, ids).tolist(), f"mismatch on {ids}"


def test_overflowing_accumulator_is_refused_with_the_layer_named(tmp_path):
    m = onnx.load(str(TINY_MODEL))
    for i, t in enumerate(m.graph.initializer):
        if t.name == "head.b":
            b = numpy_helper.to_array(t).copy()
            b[:] = 2 ** 31 - 1000
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(b, "head.b"))
    p = tmp_path / "big.onnx"
    onnx.save(m, str(p))
    with pytest.raises(emit.BoundError, match="'logits' \\(Add\\).*exceeds int32"):
        build(p, "qemu-m4", tmp_path / "b", compile=False)


def test_model_over_budget_is_refused_before_compiling(tmp_path):
    b = G.GraphBuilder()
    table = np.ones((8192, 160), np.int8)                  # 1.3 MB: over the 1 MB flash of qemu-m4
    x = b.op("Gather", [b.const("huge_table", table), G.INPUT], "embed")
    cls = b.op("Gather", [x, b.const("cls_index", np.array([0], np.int32))], "cls")
    b.op("MatMulInteger", [cls, b.const("head.w", np.ones((160, 2), np.int8))], G.OUTPUT)
    p = tmp_path / "huge.onnx"
    G.save(b.to_model(2, {"name": "huge", "max_len": 16, "vocab": 8192, "label_names": ["a", "b"],
                          "tokenizer": "{}"}), p)
    out = tmp_path / "b"
    with pytest.raises(BudgetError) as e:
        build(p, "qemu-m4", out)
    msg = str(e.value)
    assert "flash needs about" in msg and "budget 1048576" in msg
    assert "huge_table" in msg and "1310720" in msg            # the per-tensor table
    assert not (out / "firmware.elf").exists()                 # refused before any compiler ran


# ---- names reach C and the serial protocol: escaped where they can be, refused where not ----

def _micro_graph(tmp_path, name="micro", table="table", node="embed", head="head.w", extra=None):
    """The smallest graph codegen accepts, with the names under test."""
    b = G.GraphBuilder()
    x = b.op("Gather", [b.const(table, np.arange(32, dtype=np.int8).reshape(8, 4)), G.INPUT], node)
    cls = b.op("Gather", [x, b.const("cls_index", np.array([0], np.int32))], "cls")
    if extra:
        b.const(extra, np.zeros(2, np.int8))
    b.op("MatMulInteger", [cls, b.const(head, np.ones((4, 2), np.int8))], G.OUTPUT)
    p = tmp_path / "micro.onnx"
    G.save(b.to_model(2, {"name": name, "max_len": 4, "vocab": 8, "label_names": ["a", "b"], "tokenizer": "{}"}), p)
    return G.load(p)


def _host_name(tmp_path, low) -> str:
    """Compiles the generated C on the host (-Werror) and returns the model name it holds."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("host gcc not found")
    for f, text in (("model.c", low.model_c), ("weights.c", low.weights_c), ("weights.h", low.weights_h)):
        (tmp_path / f).write_text(text)
    (tmp_path / "main.c").write_text('#include <stdio.h>\n#include "tinylm_model.h"\n'
                                     'int main(void) { fputs(tinylm_model_info.name, stdout); return 0; }\n')
    kernels = sorted((ROOT / "firmware" / "kernels").glob("*.c"))
    exe = tmp_path / "name"
    r = subprocess.run([gcc, "-std=c11", "-Wall", "-Werror", f"-I{tmp_path}", f"-I{ROOT / 'firmware' / 'kernels'}",
                        f"-I{ROOT / 'firmware' / 'runtime'}", *[str(tmp_path / f) for f in ("model.c", "weights.c", "main.c")],
                        *map(str, kernels), "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout


def test_model_name_cannot_inject_c(tmp_path):
    name = 'x */ #error injected /* "q" \\ ??/ end'
    low = emit.lower(_micro_graph(tmp_path, name=name))
    assert _host_name(tmp_path, low) == name


def test_tensor_names_cannot_inject_c(tmp_path):
    g = _micro_graph(tmp_path, table="t */ #error in weights.h /*", node="n */ #error in model.c /*")
    assert _host_name(tmp_path, emit.lower(g)) == "micro"


@pytest.mark.parametrize("name", ["two\r\nlines", "nul\x00", "tab\tbed", "caf\u00e9", "", "n" * 65])
def test_model_name_unfit_for_the_protocol_is_refused(tmp_path, name):
    g = _micro_graph(tmp_path)
    g.meta["name"] = name
    with pytest.raises(G.GraphError, match="model name") as e:
        emit.lower(g)
    assert "\n" not in str(e.value)


def test_clashing_c_identifiers_are_refused_by_name(tmp_path):
    g = _micro_graph(tmp_path, head="head.w", extra="head_w")
    with pytest.raises(G.GraphError, match="'head.w' and 'head_w' both become the C identifier w_head_w"):
        emit.lower(g)


def test_overflowing_matmul_is_refused_with_the_node_named(tmp_path):
    """k * 128 * 127 > 2**31 - 1 for k = 132105: only the MatMulInteger term of the bound sees it."""
    k = 132_105
    b = G.GraphBuilder()
    x = b.op("Gather", [b.const("table", np.full((4, k), -128, np.int8)), G.INPUT], "embed")
    cls = b.op("Gather", [x, b.const("cls_index", np.array([0], np.int32))], "cls")
    b.op("MatMulInteger", [cls, b.const("head.w", np.full((k, 1), 127, np.int8))], G.OUTPUT)
    p = tmp_path / "wide.onnx"
    G.save(b.to_model(1, {"name": "wide", "max_len": 4, "vocab": 4, "label_names": [], "tokenizer": "{}"}), p)
    with pytest.raises(emit.BoundError, match="'logits' \\(MatMulInteger\\): accumulator bound 2147498880 exceeds"):
        emit.lower(G.load(p))
