"""The `tinylm` command itself: version, help that explains without noise."""
from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from tinylm import __version__
from tinylm.cli import COMMANDS, app


def test_version():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"tinylm {__version__}"


def test_every_command_has_help_without_bogus_metavars():
    for name, _ in COMMANDS:
        r = CliRunner().invoke(app, [name, "--help"])
        assert r.exit_code == 0, name
        assert "<bool>" not in r.output, name
        first = r.output.split("Options:")[0]
        assert len(first.strip().splitlines()) >= 2, f"{name}: no description in --help"


def test_console_script_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "tinylm", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "quantize" in r.stdout and "eval" in r.stdout


def test_limit_zero_is_refused_not_taken_as_all():
    r = CliRunner().invoke(app, ["eval", "models/default.onnx", "--task", "emotion", "--limit", "0"])
    assert r.exit_code == 2 and "--limit" in r.output
