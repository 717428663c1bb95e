"""firmware/runtime/protocol.c on the host (tests/fixtures/protocol_host.c, ASan+UBSan): the
EEMBC scores of m-results against their Python twin (codegen/scores.py) for chosen logits, and
m-lap-us differences across wraps of the board's 32-bit microsecond clock."""
from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from codegen.scores import format_scores, logit_scale_q, parse_scores, scores

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "fixtures" / "protocol_host.c"
CC = shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no host C compiler")
I32 = (-2 ** 31, 2 ** 31 - 1)


def build(tmp: Path, labels: int, scale: float) -> Path:
    mult, shift = logit_scale_q(scale)
    exe = tmp / f"host_{labels}_{mult}_{shift}"
    runtime = ROOT / "firmware" / "runtime"
    subprocess.run([CC, "-std=c11", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    f"-DLABELS={labels}", f"-DMULT={mult}", f"-DSHIFT={shift}", f"-I{runtime}",
                    str(SOURCE), str(runtime / "protocol.c"), "-o", str(exe)], check=True)
    return exe


def run(exe: Path, lines: list[str]) -> list[str]:
    r = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def device_scores(exe, logit_rows):
    lines = ["db load 2", "db 0100"]
    for row in logit_rows:
        lines += ["L " + " ".join(map(str, row)), "infer 1 0"]
    out = run(exe, lines)
    return [parse_scores(line[len("m-results-["):-1]) for line in out if line.startswith("m-results-")]


CASES = [[0, 0, 0, 0, 0, 0], [5, 5, 3, 3, 9, 9], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1],
         [I32[0]] * 5 + [I32[1]], [I32[1]] * 5 + [I32[0]], list(I32) * 3, [-7, -7, -7, -8, -9, -6],
         [100000, 99999, 99998, -100000, 0, 3]]


@pytest.mark.parametrize("scale", [3.8785515842813555e-05, 1e-4, 1.0, 2.0 ** -40, 50.0, 0.0, float("nan")])
def test_scores_equal_the_python_twin_and_keep_the_argmax(tmp_path, scale):
    exe = build(tmp_path, 6, scale)
    rng = random.Random(0)
    rows = CASES + [[rng.randint(-300000, 300000) for _ in range(6)] for _ in range(60)]
    rows += [[rng.choice(I32) if rng.random() < 0.3 else rng.randint(-5, 5) for _ in range(6)] for _ in range(30)]
    got = device_scores(exe, rows)
    assert got == [scores(r, *logit_scale_q(scale)) for r in rows]
    for row, p in zip(rows, got):
        assert all(q >= 0 for q in p) and abs(sum(p) - 10 ** 9) <= 6
        assert p.index(max(p)) == row.index(max(row))     # the runner's argmax is the logits'
        # and so after its division by the sum, in floating point as the runner does it
        norm = [q / sum(p) for q in p]
        assert norm.index(max(norm)) == row.index(max(row))


def test_scores_are_the_softmax_to_a_few_ppb(tmp_path):
    import math
    scale = 3.8785515842813555e-05
    row = [12000, -5000, 30000, 29999, 0, -100000]
    (p,) = device_scores(build(tmp_path, 6, scale), [row])
    e = [math.exp((v - max(row)) * scale) for v in row]
    assert max(abs(q / 1e9 - v / sum(e)) for q, v in zip(p, e)) < 5e-8
    assert format_scores(p).split(",")[0] == "0.161865261"


def test_two_labels_and_one(tmp_path):
    exe = build(tmp_path, 2, 1e-3)
    assert device_scores(exe, [[10, 10], [11, 10], [I32[0], I32[1]]]) == [
        [500000000, 500000000], [500249996, 499750004], [0, 10 ** 9]]   # true: 0.5002499998
    exe1 = build(tmp_path, 1, 1e-3)
    assert device_scores(exe1, [[-5]]) == [[10 ** 9]]


@pytest.mark.parametrize("start,step", [(2 ** 32 - 1000, 10 ** 8), (0, 2 ** 31 - 1), (2 ** 32 - 1, 1)])
def test_lap_us_difference_is_exact_across_wraps(tmp_path, start, step):
    """One clock read at the window's start, one after each inference, one at its end: the
    difference of the two m-lap-us values is every step, however often the 32-bit clock wrapped."""
    exe = build(tmp_path, 6, 1e-4)
    n = 100
    out = run(exe, ["db load 2", "db 0100", "L 1 2 3 4 5 6", f"T {start} {step}", f"infer {n} 0"])
    laps = [int(line[len("m-lap-us-"):]) for line in out if line.startswith("m-lap-us-")]
    assert len(laps) == 2 and laps[1] - laps[0] == (n + 1) * step
    assert (n + 1) * step > 2 ** 32 or step == 1
