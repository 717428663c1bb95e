"""The `tinylm` command, assembled here from its groups: training (training.py), compiling
(compile.py), evaluating (evaluation.py) and boards (boards.py). Every command runs under
common.guard, so a missing optional dependency is one line naming the extra to install."""
from __future__ import annotations

import typer

from tinylm import __version__
from tinylm.cli import boards, compile, data, evaluation, mlperf, training
from tinylm.cli.common import guard

app = typer.Typer(
    help="tinylm: train tiny language models, quantize them to integer-only ONNX, compile them "
         "to C for Cortex-M boards, and evaluate them over serial (real board or QEMU).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    # click's plain help: typer's rich panels print a bogus `<bool>` metavar beside every flag
    rich_markup_mode=None)

COMMANDS = [
    # training: float models in JAX/Flax (the `train` extra)
    ("train", training.train_tiny_cmd),
    *training.COMMANDS,
    # compiling: float run -> integer graph -> C and firmware
    ("quantize", compile.quantize),
    ("build", compile.build),
    # evaluating: float, integer reference or device
    ("eval", evaluation.eval_cmd),
    ("cost", evaluation.cost),
    ("kernels", evaluation.kernels),
    # boards
    ("boards", boards.boards),
    ("flash", boards.flash),
]
for _name, _fn in COMMANDS:
    app.command(_name)(guard(_fn))
# data: where task data is, and fetching it
app.add_typer(data.app, name="data")
# the MLPerf Tiny runner as a client: export its dataset, serve QEMU on a pty
app.add_typer(mlperf.app, name="mlperf")


def _version(value: bool):
    if value:
        typer.echo(f"tinylm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    pass


def main() -> None:  # pragma: no cover
    app()
