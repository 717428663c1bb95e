"""CLI commands of the EmbBERT area: tokenizer, pretrain, finetune, bench."""
import typer


def register(app: typer.Typer) -> None:
    pass
