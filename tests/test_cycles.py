"""The Cortex-M4 cycle model (tinylm/harness/cycles.py) on a synthetic QEMU log: instruction
classes, taken/not-taken branches from block successors, and the cycle arithmetic."""
from __future__ import annotations

from tinylm.harness import cycles as C

LOG = """----------------
IN: k
0x00000100:  f850ab04  ldr.w r10, [r0], #4
0x00000104:  f851cb04  ldr.w ip, [r1], #4
0x00000108:  fb2a3307  smlad r3, r10, r7, r3
0x0000010c:  4290      cmp r0, r2
0x0000010e:  d1f7      bne 0x100

Trace 0: 0x7f00 [00000000/00000100/00000000/ff200000] k
Trace 0: 0x7f00 [00000000/00000100/00000000/ff200000] k
----------------
IN: k
0x00000110:  e8bd8ff0  pop.w {r4, r5, r6, r7, r8, r9, r10, r11, pc}

Trace 0: 0x7f40 [00000000/00000110/00000000/ff200000] k
"""


def test_parse_log_counts_classes_and_branches(tmp_path):
    log = tmp_path / "q.log"
    log.write_text(LOG)
    mix = C.parse_log(log)
    assert mix["instructions"] == 11
    assert mix["load"] == 4 and mix["pipelined_ldst"] == 2 and mix["mul"] == 2 and mix["alu"] == 2
    assert mix["branch_taken"] == 1 and mix["branch_not_taken"] == 1      # looped once, then fell through
    assert mix["ldm_stm"] == 1 and mix["ldm_stm_regs"] == 9 and mix["pops_pc"] == 1
    assert mix["by_function"] == {"k": 11}
    # 4 loads x 2, 2 SMLAD, 2 CMP, taken 1 + 2, not taken 1, POP 1 + 9 + 2
    assert C.cycles(mix) == 8 + 2 + 2 + 3 + 1 + 12
    assert C.cycles(mix, 1, pipelined=True) < C.cycles(mix) < C.cycles(mix, 3)


def test_classify():
    assert [C.classify(m) for m in ("ldrsb.w", "strb", "ldrd", "ldmia", "push", "smmla", "smlabb", "mla",
                                    "udiv", "sxtb16", "ssat", "bne.n", "cbz", "bl", "itt")] == \
        ["load", "store", "load_pair", "ldm_stm", "ldm_stm", "mul", "mul", "mla", "div", "alu", "alu",
         "branch", "branch", "branch", "alu"]
