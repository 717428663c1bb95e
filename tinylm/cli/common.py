"""What every command group shares: the one-line error, the progress bar, and the guard that
turns a missing optional dependency into that one line."""
from __future__ import annotations

import functools

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)

# modules of the optional extras (pyproject.toml), for the message of a missing one
EXTRA_OF = {"jax": "train", "jaxlib": "train", "flax": "train", "optax": "train", "sklearn": "baseline",
            "platformio": "pio"}


def fail(msg: str, code: int = 1):
    """`error: msg` on stderr, one line, and exit with `code` (2: the environment is missing something)."""
    # escaped: a message may hold brackets ('tinylm[train]', '[SEP]') that rich would eat as markup
    console.print(f"[red]error:[/red] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def progress() -> Progress:
    """A progress bar on a terminal; off a terminal it is silent and commands print log lines."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=not console.is_terminal)


def guard(command):
    """Wraps a command so that an optional dependency that is not installed ends in one line
    naming the extra to install, not in an ImportError traceback."""
    from tinylm.extras import MissingExtra

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MissingExtra as e:
            fail(str(e), 2)
        except ModuleNotFoundError as e:
            top = (e.name or "").split(".")[0]
            if top not in EXTRA_OF:
                raise
            fail(f"{top} is not installed: pip install 'tinylm[{EXTRA_OF[top]}]'", 2)
    return run
