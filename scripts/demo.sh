#!/usr/bin/env bash
# The main job: set up, build the bundled default model for an emulated Cortex-M4 (QEMU
# mps2-an386 with the nRF52840 memory map), evaluate it over serial on the validation split
# of its task, and print the metric, agreement with the host reference, instructions per
# inference, flash and RAM. Extra arguments go to `tinylm eval` (e.g. --limit 200).
# Without a data bundle (`tinylm data` says where it is looked up) it evaluates the 200-example
# emotion sample that ships with tinylm instead, and says so before building anything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
data=()
if ! .venv/bin/tinylm data --has emotion; then
  sample=$(.venv/bin/python -c "from tinynlp_data.samples import bundled_sample; print(bundled_sample('emotion'))")
  echo "[demo] no emotion validation split found (\`.venv/bin/tinylm data\` shows where it is looked up);" \
       "evaluating the 200-example sample shipped with tinylm: $sample" >&2
  data=(--data "$sample")
fi
.venv/bin/tinylm build --board qemu-m4 --out build/default
.venv/bin/tinylm eval build/default --task emotion --json build/default/eval-emotion.json "${data[@]}" "$@"
