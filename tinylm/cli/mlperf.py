"""`tinylm mlperf`: the MLPerf Tiny benchmark runner (mlcommons/tiny benchmark/runner) on our
firmware -- `export` writes its dataset folder, truth file and yaml files, `serve` runs a qemu-*
build on a pseudo-terminal for it (docs/mlperf.md)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from tinylm.cli.common import fail

app = typer.Typer(help="The MLPerf Tiny benchmark runner as a client of the firmware (docs/mlperf.md).",
                  no_args_is_help=True, rich_markup_mode=None)


@app.command("export")
def export_cmd(build_dir: Path = typer.Argument(..., help="build directory (tinylm build)"),
               task: str = typer.Option(..., help="task name"),
               out: Path = typer.Option(..., help="output folder: the runner's --dataset_path and its yaml files"),
               data: Optional[Path] = typer.Option(None, help="export this JSONL(.gz) file instead of the validation split"),
               data_dir: Optional[Path] = typer.Option(None, help="data bundle root"),
               limit: Optional[int] = typer.Option(None, min=1, help="only the first N examples (as tinylm eval --limit)"),
               sample: Optional[int] = typer.Option(None, min=1, help="a fixed random subset of N examples (as tinylm eval --sample)"),
               seed: int = typer.Option(0, help="seed of --sample"),
               port: Optional[str] = typer.Option(None, help="time the performance windows on the device at this port (hardware boards)"),
               iterations: Optional[int] = typer.Option(None, min=1, help="inferences per performance window (default: measured, for >= 12 s on the device clock)"),
               force: bool = typer.Option(False, "--force", help="export even if the model's label names are not the task's")):
    """Write the runner's dataset folder (one .bin of uint16 token ids per example), its truth file
    y_labels.csv, tests_accuracy.yaml, tests_performance.yaml and devices.yaml for this build."""
    from tinylm.harness.evaluate import EvalError
    from tinylm.harness.mlperf import export
    from tinylm.harness.qemu import QemuError
    from tinylm.graph import GraphError
    try:
        r = export(build_dir, task, out, data=str(data) if data else None, data_dir=data_dir, limit=limit,
                   sample=sample, seed=seed, port=port, iterations=iterations, force=force)
    except (EvalError, GraphError, QemuError, KeyError, ValueError) as e:
        fail(str(e).strip("'\""))
    o = Path(r["out"]).resolve()
    print(f"{r['files']} examples of model {r['model']!r} in {r['dataset']}; performance windows: "
          f"infer {r['iterations']} {r['warmups']}")
    if r["qemu"]:
        print(f"run: tinylm mlperf serve {build_dir}   (prints the pty), then in tiny/benchmark/runner:")
        print(f"  python {o}/qemu_port.py PTY -- --dataset_path={o} --device_list={o}/devices.yaml "
              f"--test_script={o}/tests_accuracy.yaml --mode=a")
    else:
        print(f"run in tiny/benchmark/runner: python main.py --dataset_path={o} --device_list={o}/devices.yaml "
              f"--test_script={o}/tests_accuracy.yaml --mode=a")
    print("performance: the same with tests_performance.yaml and --mode=p")


@app.command("serve")
def serve_cmd(build_dir: Path = typer.Argument(..., help="build directory of a qemu-* board")):
    """Run the firmware in QEMU with its serial port on a pseudo-terminal, print the pty's path,
    and keep it running until Ctrl-C (restart it between runner sessions: the runner leaves the
    device in whatever state its last command did)."""
    from tinylm.harness.mlperf import QemuPty
    from tinylm.harness.qemu import QemuError
    try:
        q = QemuPty(build_dir)
    except (QemuError, OSError, KeyError, ValueError) as e:
        fail(str(e))
    print(q.path, flush=True)
    import signal
    # SIGTERM (kill, a service manager) stops QEMU too, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        while q.proc.poll() is None:
            time.sleep(0.5)
        fail(f"QEMU exited ({q.proc.returncode})")
    except KeyboardInterrupt:
        pass
    finally:
        q.stop()
