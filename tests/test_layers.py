"""The package as its layers (README, Layout): imports flow one way, JAX stays in the training
layers, and building or evaluating a graph works on a machine without JAX."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY_MODEL, need_arm_tools

JAX = {"jax", "jaxlib", "flax", "optax"}
PACKAGES = ("tinylm", "codegen", "tinynlp_data")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Every module of ours -> the modules it imports anywhere in its body (lazy imports too).
    `from pkg import name` counts as importing pkg.name when that is a module of ours."""
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    ours = {_module_name(p): p for p in files}
    graph = {}
    for name, path in ours.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:   # relative: resolve against this module's package
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module
                for a in node.names:
                    deps.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in ours else mod)
        graph[name] = deps
    return graph


GRAPH = _imports()


def _ours(dep: str) -> bool:
    return dep.split(".")[0] in PACKAGES


def test_no_import_cycles():
    edges = {m: {d for d in deps if d in GRAPH and d != m} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2
    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_jax_only_in_the_training_layers():
    allowed = ("tinylm.models", "tinylm.train", "tinylm.quant")
    bad = [(m, d) for m, deps in GRAPH.items() for d in deps
           if d.split(".")[0] in JAX and not m.startswith(allowed)]
    assert not bad, f"JAX imported outside models/, train/, quant/: {bad}"


def test_layers_import_downwards_only():
    """The integer graph stands alone; codegen knows only the graph; the harness never needs the
    quantizers; nothing below the CLI imports it."""
    rules = {
        "tinylm.graph": ("tinylm.graph",),
        "codegen": ("codegen", "tinylm.graph"),
        "tinylm.harness": ("tinylm.harness", "tinylm.graph", "tinylm.tokenizer", "tinylm.train.floatrun",
                           "codegen", "tinynlp_data"),
        "tinynlp_data": ("tinynlp_data",),
    }
    bad = []
    for m, deps in GRAPH.items():
        for layer, may in rules.items():
            if m == layer or m.startswith(layer + "."):
                bad += [(m, d) for d in deps if _ours(d) and d != "tinylm" and not d.startswith(may)]
    bad += [(m, d) for m, deps in GRAPH.items() if not m.startswith("tinylm.cli") and m != "tinylm.__main__"
            for d in deps if d.startswith("tinylm.cli")]
    assert not bad, f"imports against the layering: {bad}"


# A Python that cannot import JAX, Flax or optax, as on a machine with the base install only.
BLOCK_JAX = f"""
import sys
class _NoJax:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {sorted(JAX)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _NoJax())
from tinylm.cli import app
app(sys.argv[1:], prog_name='tinylm')
"""


def _tinylm_without_jax(*args, timeout=600):
    return subprocess.run([sys.executable, "-c", BLOCK_JAX, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_build_and_eval_without_jax(tmp_path):
    need_arm_tools()
    r = _tinylm_without_jax("eval", TINY_MODEL, "--task", "emotion", "--limit", 3, "--json", tmp_path / "ref.json")
    assert r.returncode == 0, r.stderr
    assert "(reference)" in r.stdout
    out = tmp_path / "b"
    r = _tinylm_without_jax("build", TINY_MODEL, "--board", "qemu-m4", "--out", out)
    assert r.returncode == 0, r.stderr
    r = _tinylm_without_jax("eval", out, "--task", "emotion", "--limit", 3, "--json", tmp_path / "dev.json")
    assert r.returncode == 0, r.stderr
    assert "mismatches with the integer reference: 0" in r.stdout


def test_float_eval_without_jax_names_the_extra(tmp_path):
    r = _tinylm_without_jax("eval", ROOT / "models" / "embbert-emotion", "--task", "emotion", "--limit", 2,
                            "--json", tmp_path / "f.json")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "tinylm[train]" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_training_command_without_jax_names_the_extra(tmp_path):
    r = _tinylm_without_jax("train", "--task", "emotion", "--out", tmp_path / "run", "--config", "micro")
    assert r.returncode == 2 and "tinylm[train]" in r.stderr and "Traceback" not in r.stderr, r.stderr
