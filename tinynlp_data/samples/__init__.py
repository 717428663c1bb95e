"""Small evaluation samples that ship with tinylm, so that the demo runs on a fresh clone with no
data bundle beside it (what each one is and its licence terms: README.md here)."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def sample_path(task: str) -> Path:
    return HERE / f"{task}-validation-sample.jsonl.gz"


def bundled_sample(task: str) -> Path | None:
    """The shipped sample of a task's validation split, or None."""
    p = sample_path(task)
    return p if p.is_file() else None
