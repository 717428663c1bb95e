"""The progress file of `tinylm eval`: one JSON line per finished example, so an interrupted run
continues with --resume without losing or repeating one.

Line 1 is the run's identity, {"run": {...}}: what was evaluated (a hash of the model, build or
run directory), by which engine, on which task and data file (its hash), and which examples
(--sample, --seed, --limit). --resume continues only that run: any other identity would mix
examples of two runs into one score (or index past the list), so it is refused naming the field.
The interruption may cut the last line short; that line is dropped (the file truncated to the
last whole line) and its example recomputed, once.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

FORMAT = 1
FIELDS = ("format", "target_sha256", "engine", "task", "data_sha256", "sample", "seed", "limit")


class ProgressError(ValueError):
    """The progress file belongs to another run or is damaged beyond its last line."""


def sha256_files(paths) -> str:
    """One hash over the given files' names and bytes (missing files are skipped)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        if p.is_file():
            h.update(p.name.encode() + b"\0")
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def identity(*, target_sha256: str, engine: str, task: str, data_sha256: str, sample, seed, limit,
             windows: dict | None = None) -> dict:
    # the seed only picks the --sample subset: without one it does not change the run
    run = {"format": FORMAT, "target_sha256": target_sha256, "engine": engine, "task": task,
           "data_sha256": data_sha256, "sample": sample or None, "seed": seed if sample else None,
           "limit": limit or None}
    if windows:          # eval --windows on a graph or run: other logits than without
        run["windows"] = windows
    return run


def start_run(path: Path, run: dict) -> None:
    """A new progress file holding only the identity line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run": run}) + "\n")


def resume_run(path: Path, run: dict, example_ids: list[str]) -> tuple[dict[int, dict], bool]:
    """The records of the interrupted run and whether a torn last line was dropped. Raises
    ProgressError (one line) if the file is another run's or damaged before its last line."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    try:
        head = json.loads(lines[0])
    except json.JSONDecodeError:
        head = None
    if not isinstance(head, dict) or not isinstance(head.get("run"), dict):
        raise ProgressError(f"cannot resume: {path} has no run identity (an older tinylm wrote it); "
                            "rerun without --resume to start over")
    old = head["run"]
    for field in FIELDS:
        if old.get(field) != run[field]:
            raise ProgressError(f"cannot resume: {path} is of another run: {field} was {old.get(field)!r}, "
                                f"now {run[field]!r}; rerun without --resume to start over")
    done: dict[int, dict] = {}
    good_end = len(lines[0]) + 1            # bytes up to the end of the last whole line
    body = lines[1:]
    for k, line in enumerate(body):
        last = k == len(body) - 1           # after the final '\n': empty, or a torn line
        if not line.strip():
            if not last:
                good_end += len(line) + 1
            continue
        try:
            rec = json.loads(line)
            if last:
                raise ValueError("no newline: the write was cut")
        except ValueError:
            if last:
                break
            raise ProgressError(f"cannot resume: {path} line {k + 2} is corrupt; rerun without --resume") from None
        i = rec.get("index") if isinstance(rec, dict) else None
        if not isinstance(i, int) or not 0 <= i < len(example_ids) or rec.get("id") != example_ids[i]:
            raise ProgressError(f"cannot resume: {path} line {k + 2} is not an example of this run; "
                                "rerun without --resume")
        done[i] = rec
        good_end += len(line) + 1
    repaired = good_end < len(raw)
    if repaired:
        with path.open("r+b") as f:
            f.truncate(good_end)
    return done, repaired
