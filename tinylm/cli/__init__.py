"""The `tinylm` command. Each area registers its own subcommands from its own module."""
from __future__ import annotations

import typer

from tinylm.cli import boards as cli_boards
from tinylm.cli import training as cli_embbert
from tinylm.cli import model as cli_spine

app = typer.Typer(
    help="tinylm: train tiny language models, quantize them to integer-only ONNX, compile them "
         "to C for Cortex-M boards, and evaluate them over serial (real board or QEMU).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

for _module in (cli_spine, cli_embbert, cli_boards):
    _module.register(app)


def main() -> None:  # pragma: no cover
    app()
