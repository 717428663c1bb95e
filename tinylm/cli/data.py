"""`tinylm data`: where task data is looked up and what is there; `tinylm data get TASK` writes a
task's splits in the bundle format from the Hugging Face hub (or a local dataset)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tinylm.cli.common import console, fail

app = typer.Typer(help="Task data: where it is looked up, what is present, and fetching a task.",
                  no_args_is_help=False, invoke_without_command=True, rich_markup_mode=None)


def status(data_dir: Optional[Path] = None) -> dict:
    """The lookup order with what each place holds, and the shipped samples."""
    from tinynlp_data import TASKS
    from tinynlp_data.loader import default_data_dirs
    from tinynlp_data.samples import bundled_sample
    places = []
    for how, d in default_data_dirs(data_dir):
        tasks = sorted(n for n, t in TASKS.items() if (d / t.suite / n / "validation.jsonl.gz").is_file())
        places.append({"how": how, "dir": str(d), "exists": d.is_dir(), "tasks": tasks})
    used = next((p["dir"] for p in places if p["exists"]), None)
    samples = {n: str(bundled_sample(n)) for n in TASKS if bundled_sample(n)}
    return {"places": places, "used": used, "samples": samples}


@app.callback()
def data(ctx: typer.Context,
         data_dir: Optional[Path] = typer.Option(None, help="a data bundle root to look in first"),
         json_out: bool = typer.Option(False, "--json", help="print the status as JSON"),
         has: Optional[str] = typer.Option(None, help="only check: exit 0 if TASK's validation split is found, 1 if not")):
    """Where data is looked up (--data-dir, then $TINYLM_DATA, then ../shared/data beside the
    repository), which tasks each place holds, and the samples that ship with tinylm."""
    if ctx.invoked_subcommand:
        return
    st = status(data_dir)
    if has:
        used = next((p for p in st["places"] if p["exists"]), None)
        raise typer.Exit(0 if used and has in used["tasks"] else 1)
    if json_out:
        print(json.dumps(st, indent=2))
        return
    print("data is looked up in this order (the first folder that exists is used):")
    for p in st["places"]:
        mark = "used" if p["dir"] == st["used"] else ("exists" if p["exists"] else "missing")
        print(f"  {p['how']}: {p['dir']} [{mark}]" + (f": {', '.join(p['tasks'])}" if p["tasks"] else ""))
    if st["used"] is None:
        print("no data folder: give one with --data-dir DIR or TINYLM_DATA=DIR, or fetch a task: tinylm data get TASK")
    for task, path in st["samples"].items():
        print(f"shipped sample ({task}, for a first run): --data {path}")


@app.command("get")
def get(task: str = typer.Argument(..., help="task name, e.g. emotion"),
        out: Optional[Path] = typer.Option(None, help="data bundle root to write into (default: $TINYLM_DATA, else ../shared/data beside the repository)"),
        source: Optional[str] = typer.Option(None, help="a local dataset (folder or file `datasets` reads, fields as in the bundle) instead of the hub")):
    """Write a task's train and validation splits in the bundle format (hub: needs the `hub` extra and a network)."""
    from tinynlp_data import DataError, get_task
    from tinynlp_data.hf import write_bundle
    from tinynlp_data.loader import default_data_dirs
    try:
        get_task(task)
        root = out or [d for how, d in default_data_dirs() if how != "--data-dir"][0]
        folder = write_bundle(task, root, source=source)
    except (DataError, KeyError) as e:
        fail(str(e).strip("'\""), 2)
    meta = json.loads((folder / "meta.json").read_text())
    console.print(f"{folder}: " + ", ".join(f"{k} {v:,}" for k, v in meta["counts"].items()), highlight=False)
