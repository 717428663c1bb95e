"""Loaders for the JSONL.gz layout of the shared data bundle, or any one file in that format.

Layout: <data_dir>/<suite>/<task>/<split>.jsonl.gz, one JSON object per line:
{"id", "text", "label"} (single) or {"id", "text_a", "text_b", "label"} (pair)."""
from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .registry import Task, get_task

REPO_ROOT = Path(__file__).resolve().parent.parent


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class Example:
    id: int
    text: str
    text_b: str | None
    label: float | int


def default_data_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Where data is looked for, in order: --data-dir, $TINYLM_DATA, ../shared/data beside the repo."""
    dirs = []
    if data_dir:
        dirs.append(("--data-dir", Path(data_dir)))
    if os.environ.get("TINYLM_DATA"):
        dirs.append(("TINYLM_DATA", Path(os.environ["TINYLM_DATA"])))
    dirs.append(("../shared/data beside the repository", REPO_ROOT.parent / "shared" / "data"))
    return dirs


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    if data_dir and not Path(data_dir).is_dir():      # an explicit folder is never silently replaced
        raise DataError(f"--data-dir {data_dir}: no such directory")
    tried = default_data_dirs(data_dir)
    for _, d in tried:
        if d.is_dir():
            return d
    how = [f"{h}: {d}" for h, d in tried]
    if not os.environ.get("TINYLM_DATA"):
        how.insert(1 if data_dir else 0, "TINYLM_DATA: not set")
    raise DataError("no data directory found (tried " + "; ".join(how) + "). Give a bundle with "
                    "--data-dir DIR or TINYLM_DATA=DIR, one file with --data FILE, or fetch a task "
                    "into one with `tinylm data get TASK`; `tinylm data` shows what is where")


def split_path(task: str | Task, split: str, data_dir=None) -> Path:
    t = get_task(task) if isinstance(task, str) else task
    return find_data_dir(data_dir) / t.suite / t.name / f"{split}.jsonl.gz"


def read_jsonl(path: str | os.PathLike, task: Task | None = None) -> list[Example]:
    """Reads one file (gzip or plain JSONL). Errors name the file and the 1-based line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                out.append(_parse(line, path, lineno, task))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    return out


def _parse(line: str, path: Path, lineno: int, task: Task | None) -> Example:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict) or "label" not in obj:
        raise DataError(f"{where}: expected an object with a 'label' field")
    if "text" in obj:
        text, text_b = obj["text"], None
    elif "text_a" in obj and "text_b" in obj:
        text, text_b = obj["text_a"], obj["text_b"]
    else:
        raise DataError(f"{where}: expected 'text' or 'text_a' and 'text_b'")
    if not isinstance(text, str) or (text_b is not None and not isinstance(text_b, str)):
        raise DataError(f"{where}: text fields must be strings")
    label = obj["label"]
    if task is not None and task.problem == "classification":
        if not isinstance(label, int) or not 0 <= label < task.num_labels:
            raise DataError(f"{where}: label {label!r} is not in 0..{task.num_labels - 1} for task {task.name}")
    elif not isinstance(label, (int, float)):
        raise DataError(f"{where}: label {label!r} is not a number")
    return Example(int(obj.get("id", lineno - 1)), text, text_b, label)


def load_split(task: str | Task, split: str = "validation", data_dir=None, path=None) -> list[Example]:
    """Examples of a task's split, or of the file `path` if given (--data FILE)."""
    t = get_task(task) if isinstance(task, str) else task
    return read_jsonl(path if path else split_path(t, split, data_dir), t)
