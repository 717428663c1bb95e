"""The parser fuzzed on the host under ASan + UBSan for a few seconds (scripts/fuzz_parser.py runs
the long version): no crash, no broken reply rule; and the harness itself catches both."""
from __future__ import annotations

import importlib.util
import shutil

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not found")


def _script():
    spec = importlib.util.spec_from_file_location("fuzz_parser", ROOT / "scripts" / "fuzz_parser.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fz():
    return _script()


@pytest.fixture(scope="module")
def exe(fz, tmp_path_factory):
    return fz.build(tmp_path_factory.mktemp("fuzz"))


def test_oracle_flags_broken_replies(exe):
    import subprocess
    r = subprocess.run([str(exe), "--selftest"], capture_output=True, text=True)
    assert r.returncode == 0 and "selftest ok" in r.stdout, r.stderr


def test_bounded_fuzz_run_finds_nothing(fz, exe, tmp_path):
    res = fz.fuzz(exe, inputs=2_000_000, seconds=4, seed=11, crash_dir=tmp_path)
    assert res["crashes"] == 0 and res["sanitizer_reports"] == 0, res["crash_inputs"][:1]
    assert res["violations"] == 0, res["violation_samples"]
    assert res["inputs"] >= 20_000 and res["commands"] > res["inputs"]


def _mutant(tmp_path, old, new):
    src = (ROOT / "firmware" / "runtime" / "protocol.c").read_text()
    assert old in src
    p = tmp_path / "protocol.c"
    p.write_text(src.replace(old, new))
    return p


def test_a_buffer_overflow_is_caught_and_saved(fz, tmp_path):
    bad = _mutant(tmp_path, "if (len < TINYLM_CMD_MAX) cmd[len++]", "if (len < TINYLM_CMD_MAX + 64) cmd[len++]")
    res = fz.fuzz(fz.build(tmp_path / "b", bad), inputs=200_000, seconds=20, seed=3, crash_dir=tmp_path / "crashes")
    assert res["crashes"] >= 1 and res["sanitizer_reports"] >= 1
    first = res["crash_inputs"][0]
    assert "global-buffer-overflow" in first["report"] or "out of bounds" in first["report"]
    saved = open(first["file"], "rb").read()                      # the input, replayable
    assert len(saved.split(b"%")[0]) > 256 or max(map(len, saved.split(b"%"))) > 256


@pytest.mark.parametrize("old,new", [
    ("if ((c < 0x20 || c > 0x7e) && bad < 0)", "if (0)"),                 # NUL and control bytes pass
    ("    if (!board_rx_ready()) return 0;", "    return 0;"),             # infer cannot be aborted
    ("} else if (too_long) {", "} else if (0) {"),                         # long commands cut silently
])
def test_rule_violations_of_a_broken_parser_are_reported(fz, tmp_path, old, new):
    res = fz.fuzz(fz.build(tmp_path / "b", _mutant(tmp_path, old, new)), inputs=100_000, seconds=20, seed=5)
    assert res["violations"] > 0 and res["crashes"] == 0
