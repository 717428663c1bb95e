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


def embbert_seqs(rng, lengths):
    """Token-id lists of the given lengths ([CLS] first; some pairs with a [SEP] inside)."""
    out = []
    for n in lengths:
        s = [2] + list(rng.integers(5, 8192, n - 1))
        if n > 4 and rng.random() < 0.4:
            s[int(rng.integers(1, n - 1))] = 4          # a pair: segment 2 after the first [SEP]
        out.append(s)
    return out


def host_logits(low, ins, tmp_path):
    """The generated C of a lowered graph (codegen.emit.lower), compiled for the host with
    ASan + UBSan and -Werror, run on token-id lists: one logits list per input."""
    import subprocess
    if shutil.which("gcc") is None:
        pytest.skip("no host gcc")
    for name, text in (("model.c", low.model_c), ("weights.c", low.weights_c), ("weights.h", low.weights_h)):
        (tmp_path / name).write_text(text)
    srcs = [str(p) for p in sorted((ROOT / "firmware" / "kernels").glob("*.c"))]
    srcs += [str(tmp_path / "model.c"), str(tmp_path / "weights.c"), str(ROOT / "tests" / "fixtures" / "host_model_main.c")]
    exe = tmp_path / "host_model"
    subprocess.run(["nice", "gcc", "-std=c99", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'firmware' / 'kernels'}",
                    f"-I{ROOT / 'firmware' / 'runtime'}", f"-I{tmp_path}", *srcs, "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    r = subprocess.run([str(exe)], input="".join(f"{len(s)} " + " ".join(map(str, s)) + "\n" for s in ins),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return [list(map(int, line.split())) for line in r.stdout.splitlines()]


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


def toy_bundle(tmp_path, task, train, val):
    """`train` and `val` examples as a data bundle for `task` (the commands that read a task's
    splits, on a clean clone that may have no data beside it). Returns the data directory."""
    import gzip
    import json

    from tinynlp_data import get_task
    t = get_task(task)
    folder = tmp_path / "data" / t.suite / t.name
    folder.mkdir(parents=True)
    for split, rows in (("train", train), ("validation", val)):
        with gzip.open(folder / f"{split}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps({"id": e.id, "text": e.text, "label": e.label}) + "\n" for e in rows)
    (folder / "meta.json").write_text(json.dumps({"task": t.name, "suite": t.suite, "type": t.type,
                                                  "problem": t.problem, "num_labels": t.num_labels,
                                                  "label_names": list(t.label_names), "metric": t.metric}))
    return tmp_path / "data"


@pytest.fixture(scope="session")
def default_build(tmp_path_factory):
    """build/ of the bundled default model for qemu-m4 (firmware.elf, memory.json, ...)."""
    need_arm_tools()
    from codegen.build import build
    out = tmp_path_factory.mktemp("default_build")
    build(DEFAULT_MODEL, "qemu-m4", out)
    return out
