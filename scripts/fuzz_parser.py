#!/usr/bin/env python3
"""Fuzz the firmware's command parser on the host, under ASan + UBSan.

Builds tests/fixtures/fuzz_protocol.c (the parser of firmware/runtime/protocol.c with the stub
model and a host board) with gcc -fsanitize=address,undefined -fno-sanitize-recover=all, runs its
deterministic random driver, and reports inputs per second, crashes (sanitizer reports or any
other abnormal exit; the driver is restarted after the crashing input, which is saved) and
broken reply rules of docs/protocol.md (the oracle in the driver).

    scripts/fuzz_parser.py                       # 10 M inputs (about a minute on one core)
    scripts/fuzz_parser.py --seconds 60 --json fuzz.json
    nice -n 10 scripts/fuzz_parser.py --inputs 100000 --seed 7

Replay input I of seed S: the driver with --seed S --start I --inputs 1 (--dump FILE writes it).
tests/test_fuzz_parser.py runs a few seconds of this in the test suite. With clang, the same file
is a libFuzzer target: clang -fsanitize=fuzzer,address,undefined -DTINYLM_LIBFUZZER ...
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "fixtures" / "fuzz_protocol.c"
STUB = ROOT / "tests" / "fixtures" / "stub_model.c"
RUNTIME = ROOT / "firmware" / "runtime"
FLAGS = ["-std=c11", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer", "-Wall", "-Wextra"]
# abort_on_error: a UBSan report raises SIGABRT, whose handler in the driver names the input
ENV = {**os.environ, "UBSAN_OPTIONS": "abort_on_error=1:print_stacktrace=1",
       "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=0"}
SANITIZER = re.compile(r"ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer")


def build(out_dir: Path, protocol_c: Path | None = None, cc: str | None = None) -> Path:
    """The sanitized fuzz driver; protocol_c replaces firmware/runtime/protocol.c (to check that
    the oracle catches an older parser)."""
    cc = cc or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("fuzz_parser: no host C compiler (gcc) found")
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / "fuzz_protocol"
    # -Werror for the real parser only: a deliberately broken copy may leave a helper unused
    extra = [f'-DPROTOCOL_C="{Path(protocol_c).resolve()}"'] if protocol_c else ["-Werror"]
    cmd = [cc, *FLAGS, *extra, f"-I{RUNTIME}", str(SOURCE), str(STUB), "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"fuzz_parser: build failed:\n$ {' '.join(cmd)}\n{r.stderr}")
    return exe


def fuzz(exe: Path, *, inputs: int, seconds: float | None = None, seed: int = 1,
         crash_dir: Path | None = None) -> dict:
    """Runs inputs [0, inputs) of seed (or until seconds pass); restarts after each crash."""
    totals = {"inputs": 0, "commands": 0, "bytes": 0, "violations": 0, "crashes": 0,
              "sanitizer_reports": 0, "crash_inputs": [], "violation_samples": []}
    start, t0 = 0, time.monotonic()
    while start < inputs:
        left = None if seconds is None else seconds - (time.monotonic() - t0)
        if left is not None and left <= 0:
            break
        cmd = [str(exe), "--seed", str(seed), "--start", str(start), "--inputs", str(inputs - start)]
        if left is not None:
            cmd += ["--seconds", f"{left:.3f}"]
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=ENV)
        m = re.search(r"inputs=(\d+) commands=(\d+) bytes=(\d+) violations=(\d+) seconds=\S+ next=(\d+)", r.stdout)
        if m and r.returncode in (0, 3):
            n, c, b, v, nxt = map(int, m.groups())
            totals.update(inputs=totals["inputs"] + n, commands=totals["commands"] + c,
                          bytes=totals["bytes"] + b, violations=totals["violations"] + v)
            totals["violation_samples"] += [line for line in r.stderr.splitlines() if line.startswith("violation")][:5]
            start = nxt
            continue
        # a crash: the driver's death callback names the input; replay it into a file
        totals["crashes"] += 1
        totals["sanitizer_reports"] += len(SANITIZER.findall(r.stderr))
        hit = re.search(r"crash at input (\d+)", r.stderr)
        bad = int(hit.group(1)) if hit else start
        saved = None
        if crash_dir is not None:
            crash_dir.mkdir(parents=True, exist_ok=True)
            saved = crash_dir / f"crash-seed{seed}-input{bad}.bin"
            subprocess.run([str(exe), "--seed", str(seed), "--start", str(bad), "--dump", str(saved)])
        totals["crash_inputs"].append({"input": bad, "file": str(saved) if saved else None,
                                       "report": "\n".join(r.stderr.splitlines()[-20:])})
        totals["inputs"] += bad - start + 1
        start = bad + 1
        if totals["crashes"] >= 20:
            break
    totals["seconds"] = round(time.monotonic() - t0, 2)
    totals["inputs_per_s"] = round(totals["inputs"] / max(totals["seconds"], 1e-9))
    totals["seed"] = seed
    return totals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=10_000_000, help="inputs to run (default 10 M)")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build-dir", type=Path, default=None, help="where to build (default: a temp dir)")
    ap.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"), help="crashing inputs go here")
    ap.add_argument("--protocol-c", type=Path, default=None, help="fuzz this protocol.c instead")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(args.build_dir or Path(tmp), args.protocol_c)
        if subprocess.run([str(exe), "--selftest"], capture_output=True).returncode != 0:
            print("fuzz_parser: the oracle's selftest failed", file=sys.stderr)
            return 2
        res = fuzz(exe, inputs=args.inputs, seconds=args.seconds, seed=args.seed, crash_dir=args.crash_dir)
    print(f"inputs {res['inputs']:,} ({res['commands']:,} commands, {res['bytes']:,} bytes) in "
          f"{res['seconds']} s: {res['inputs_per_s']:,} inputs/s")
    print(f"crashes {res['crashes']}, sanitizer reports {res['sanitizer_reports']}, "
          f"rule violations {res['violations']}")
    for line in res["violation_samples"][:5]:
        print("  " + line)
    for c in res["crash_inputs"][:5]:
        print(f"  crash at input {c['input']} (saved: {c['file']})\n{c['report']}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0 if res["crashes"] == 0 and res["violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
