"""Cortex-M4 cycle estimate of one inference: the instructions QEMU executes, classified and
weighted by the cycle counts of ARM's Cortex-M4 Technical Reference Manual (ARM DDI 0439B,
section 3.3 "Processor instruction timings", Table 3-1). An ESTIMATE until a board's DWT cycle
counter measures it: it assumes zero-wait-state memory (on the nRF52840: code from the
instruction cache, the weights' flash reads without wait states) and no bus contention.

How: QEMU runs the firmware with `-d in_asm,exec,nochain` and `-dfilter` on the address ranges
of the inference code (model.c, the kernels, libgcc/newlib helpers), so the log holds every
translated block (its instructions) and every execution of one. Counting the instructions of
each executed block gives the exact dynamic instruction mix (its total is checked against the
board's instruction count); a block whose successor does not start right after its last
instruction ended in a taken branch.

Cycles per class (TRM Table 3-1; P = pipeline refill after a taken branch, 1..3 cycles; N =
registers in a load/store multiple):
  ALU, shift, compare, move, extend, SXTB16, bit field, IT, NOP             1
  MUL, SMULL/UMULL, SMLAL/UMLAL, SMMLA/SMMUL, SMLAD/SMLABB (DSP MACs)      1
  MLA, MLS                                                                2
  SDIV/UDIV                                                                2..12 (model: 7)
  LDR/STR (byte, half, word; any addressing)                               2 (1 when it follows
                                                                           another load/store: pipelined)
  LDRD/STRD                                                                3
  LDM/STM/PUSH/POP of N registers                                          1 + N (POP into pc: + P)
  B/BL/BX/BLX/CBZ taken                                                    1 + P; not taken 1
The point estimate takes P = 2 and every load as 2 cycles; the range takes P = 1 with
pipelined loads (low) and P = 3 (high).
"""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from codegen import toolchain

CLOCK_HZ = 64_000_000          # nRF52840

_EXEC = re.compile(r"^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/[0-9a-f]+/([0-9a-f]+)\]")
_INSN = re.compile(r"^0x([0-9a-f]+):\s+((?:[0-9a-f]{4,8}\s+)+)(\S+)\s*(.*)$")
_BRANCH = re.compile(r"^(b|bl|bx|blx|cbz|cbnz|tbb|tbh)(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al)?(\.w|\.n)?$")


def inference_ranges(elf) -> list[tuple[int, int, str]]:
    """(start, end, name) of every function of the inference: model.c, the kernels, and the
    compiler's helpers (libgcc, newlib's mem*) they call."""
    kernels = {p.name for p in (toolchain.REPO / "firmware" / "kernels").glob("*.c")} | {"model.c"}
    out = subprocess.run(["arm-none-eabi-nm", "-S", "-l", "-n", "--defined-only", str(elf)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    syms = []
    for line in out:
        m = re.match(r"^([0-9a-f]+) (?:([0-9a-f]+) )?([tTwW]) (\S+)\s*(\S*)", line)
        if m:
            syms.append((int(m.group(1), 16), int(m.group(2), 16) if m.group(2) else None, m.group(4),
                         m.group(5)))
    ranges = []
    for i, (addr, size, name, src) in enumerate(syms):
        base = Path(src.split(":")[0]).name if src else ""
        if not (base in kernels or "libgcc" in src or name in ("memset", "memcpy")):
            continue
        if size is None:
            size = (syms[i + 1][0] - addr) if i + 1 < len(syms) else 4
        addr &= ~1
        if size:
            ranges.append((addr, addr + size, name))
    return ranges


def classify(mnemonic: str) -> str:
    m = mnemonic.lower()
    base = re.sub(r"(\.w|\.n)$", "", m)
    if _BRANCH.match(m):
        return "branch"
    if base.startswith(("ldm", "stm", "push", "pop")):
        return "ldm_stm"
    if base.startswith(("ldrd", "strd")):
        return "load_pair"
    if base.startswith(("ldr", "ldrex")):
        return "load"
    if base.startswith(("str", "strex")):
        return "store"
    if base.startswith(("sdiv", "udiv")):
        return "div"
    if base.startswith(("mla", "mls")):
        return "mla"
    if base.startswith(("mul", "smul", "umul", "smla", "umla", "smmla", "smmul", "smmls", "smlsd",
                        "smuad", "smusd", "umaal", "smlal")):
        return "mul"
    return "alu"


def _regs_in(operands: str) -> int:
    m = re.search(r"\{([^}]*)\}", operands)
    if not m:
        return 1
    n = 0
    for part in m.group(1).split(","):
        part = part.strip()
        if "-" in part:
            a, b = (int(re.sub(r"\D", "", x) or 0) for x in part.split("-"))
            n += b - a + 1
        elif part:
            n += 1
    return n


def parse_log(path) -> dict:
    """Dynamic instruction mix of the logged execution: class counts, registers moved by
    load/store multiple, pops into pc, and pipelined (back-to-back) loads/stores."""
    blocks: dict[int, dict[int, list]] = {}      # pc -> {length: [(cls, size, extra)]}
    counts, cur_pc, cur, by_fn = Counter(), None, None, Counter()
    prev_end, prev_last = None, None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("0x"):
                m = _INSN.match(line)
                if not m:
                    continue
                addr, enc, mn, ops = int(m.group(1), 16), m.group(2).split(), m.group(3), m.group(4)
                size = sum(len(e) for e in enc) // 2
                cls = classify(mn)
                extra = _regs_in(ops) if cls == "ldm_stm" else 0
                pops_pc = cls == "ldm_stm" and "pc" in ops
                if cur is None:
                    cur_pc, cur = addr, []
                cur.append((cls, addr, size, extra, pops_pc))
                continue
            if cur is not None:      # a translated block ended
                blocks.setdefault(cur_pc, {})[len(cur)] = cur
                cur = None
            m = _EXEC.match(line)
            if not m:
                continue
            pc, cflags = int(m.group(1), 16), int(m.group(2), 16)
            versions = blocks.get(pc)
            if not versions:
                counts["unknown_blocks"] += 1
                continue
            limit = cflags & 0x1FF
            insns = versions.get(limit) if limit and limit in versions else versions[max(versions)]
            by_fn[line.rsplit("] ", 1)[-1].strip()] += len(insns)
            if prev_last is not None:   # how the previous block left: fall through or taken
                _count_exit(counts, prev_last, prev_end != pc)
            for j, (cls, _, _, extra, pops_pc) in enumerate(insns[:-1]):
                _count(counts, cls, extra, pops_pc, insns[j - 1][0] if j else None)
            cls, addr, size, extra, pops_pc = insns[-1]
            prev_last = (cls, extra, pops_pc, insns[-2][0] if len(insns) > 1 else None)
            prev_end = addr + size
    if prev_last is not None:
        _count_exit(counts, prev_last, True)
    return {**counts, "by_function": dict(by_fn.most_common())}


def _count(counts, cls, extra, pops_pc, before):
    counts["instructions"] += 1
    if cls == "branch":      # a branch inside a block is an IT-skipped or never-taken one
        counts["branch_not_taken"] += 1
        return
    counts[cls] += 1
    if cls == "ldm_stm":
        counts["ldm_stm_regs"] += extra
        counts["pops_pc"] += int(pops_pc)
    if cls in ("load", "store") and before in ("load", "store"):
        counts["pipelined_ldst"] += 1


def _count_exit(counts, last, taken):
    cls, extra, pops_pc, before = last
    if cls == "branch":
        counts["instructions"] += 1
        counts["branch_taken" if taken else "branch_not_taken"] += 1
    else:
        _count(counts, cls, extra, pops_pc, before)
        if taken and not pops_pc:
            counts["other_exits"] += 1


def cycles(mix: dict, refill: int = 2, pipelined: bool = False) -> int:
    c = mix.get
    loads = c("load", 0) + c("store", 0)
    return (c("alu", 0) + c("mul", 0) + 2 * c("mla", 0) + 7 * c("div", 0)
            + 2 * loads - (c("pipelined_ldst", 0) if pipelined else 0)
            + 3 * c("load_pair", 0) + c("ldm_stm", 0) + c("ldm_stm_regs", 0) + refill * c("pops_pc", 0)
            + (1 + refill) * c("branch_taken", 0) + c("branch_not_taken", 0))


def estimate(build_dir, lengths: list[int]) -> list[dict]:
    """Per length: the instruction mix of one inference and the estimated M4 cycles and ms at
    64 MHz (point, low, high), plus the board's own instruction count for the check."""
    from tinylm.harness.costs import measure_costs
    build_dir = Path(build_dir)
    elf = build_dir / "firmware.elf"
    board = toolchain.load_board(json.loads((build_dir / "build.json").read_text())["board"])
    flt = ",".join(f"0x{a:x}..0x{b - 1:x}" for a, b, _ in inference_ranges(elf))
    rows = []
    for n in lengths:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "qemu.log"
            q = _LoggingQemu(board, elf, ["-d", "in_asm,exec,nochain", "-dfilter", flt, "-D", str(log)])
            try:
                cost = measure_costs(build_dir, [n], port=q.url, repeats=1)[0]
            finally:
                q.stop()
            mix = parse_log(log)
        row = {"tokens": n, "macs": cost["macs"], "board_instructions": cost.get("instructions"), **mix,
               "cycles": cycles(mix, 2), "cycles_low": cycles(mix, 1, pipelined=True), "cycles_high": cycles(mix, 3)}
        for k in ("cycles", "cycles_low", "cycles_high"):
            row[k.replace("cycles", "ms")] = 1000 * row[k] / CLOCK_HZ
        rows.append(row)
    return rows


class _LoggingQemu:
    """QemuBoard with extra QEMU arguments (the log flags). QemuBoard takes none, so its one
    Popen call is wrapped while it starts (single-threaded; restored at once)."""

    def __init__(self, board, elf, extra):
        from tinylm.harness import qemu as Q
        orig = Q.subprocess.Popen

        def popen(cmd, *a, **kw):
            return orig(cmd + extra, *a, **kw)
        Q.subprocess.Popen = popen
        try:
            self._q = Q.QemuBoard(board, elf, boot_timeout=60)
        finally:
            Q.subprocess.Popen = orig
        self.url = self._q.url

    def stop(self):
        self._q.stop()
