#!/usr/bin/env bash
# The main job: set up, build the bundled default model for an emulated Cortex-M4 (QEMU
# mps2-an386 with the nRF52840 memory map), evaluate it over serial on the validation split
# of its task, and print the metric, agreement with the host reference, instructions per
# inference, flash and RAM. Extra arguments go to `tinylm eval` (e.g. --limit 200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/tinylm build --board qemu-m4 --out build/default
.venv/bin/tinylm eval build/default --task emotion --json build/default/eval-emotion.json "$@"
