"""CLI commands of the spine: train, quantize, build, eval."""
import typer


def register(app: typer.Typer) -> None:
    pass
