"""Shared fixtures: the bundled default model built once per session for qemu-m4."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "default.onnx"        # the bundled default: EmbBERT-Q (QAT) on emotion
TINY_MODEL = ROOT / "models" / "emotion-tiny.onnx"      # the spine's small transformer (tests of its structure)


def need_arm_tools():
    missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: apt-get install -y --no-install-recommends "
                    "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")


def toy_examples(n, seed):
    """n single-text examples of a two-class toy task a tiny model learns in seconds."""
    import numpy as np

    from tinynlp_data import Example
    rng = np.random.default_rng(seed)
    words = ["good", "great", "fine", "bad", "awful", "poor"]
    out = []
    for i in range(n):
        y = int(rng.integers(0, 2))
        w = [words[int(rng.integers(0, 3)) + 3 * (1 - y)] for _ in range(3)]
        out.append(Example(i, "it was " + " ".join(w), None, y))
    return out


@pytest.fixture(scope="session")
def default_build(tmp_path_factory):
    """build/ of the bundled default model for qemu-m4 (firmware.elf, memory.json, ...)."""
    need_arm_tools()
    from codegen.build import build
    out = tmp_path_factory.mktemp("default_build")
    build(DEFAULT_MODEL, "qemu-m4", out)
    return out
