"""A task's splits from the Hugging Face hub (or a local dataset in any format `datasets` reads),
written in the bundle layout that loader.py reads: `tinylm data get TASK`.

`datasets` is an optional dependency (the `hub` extra), imported lazily. Hub splits differ from
the shared bundle's: the bundle holds out the official test (for GLUE the official dev) and
carves its validation from train; here `validation` is the hub's own, or a seeded 10% of train
where the hub has none (IMDb, AG News). Labels are mapped by NAME onto the registry's order, so
a hub release that orders its classes differently still lands right; an unknown name is an
error, never a silent shift."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from .loader import DataError, Example
from .registry import Task, get_task

# task -> (dataset path, config name, text field(s), label field)
HF_SOURCES = {
    "imdb": ("imdb", None, ("text",), "label"),
    "ag_news": ("ag_news", None, ("text",), "label"),
    "emotion": ("dair-ai/emotion", None, ("text",), "label"),
    "snips": ("benayas/snips", None, ("text",), "label"),
    "cola": ("glue", "cola", ("sentence",), "label"),
    "sst2": ("glue", "sst2", ("sentence",), "label"),
    "mrpc": ("glue", "mrpc", ("sentence1", "sentence2"), "label"),
    "stsb": ("glue", "stsb", ("sentence1", "sentence2"), "label"),
    "qqp": ("glue", "qqp", ("question1", "question2"), "label"),
    "mnli": ("glue", "mnli", ("premise", "hypothesis"), "label"),
    "qnli": ("glue", "qnli", ("question", "sentence"), "label"),
    "rte": ("glue", "rte", ("sentence1", "sentence2"), "label"),
    "wnli": ("glue", "wnli", ("sentence1", "sentence2"), "label"),
}
SPLITS = ("train", "validation")


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError("fetching from the hub needs the `datasets` package: pip install 'tinylm[hub]'") from None
    return datasets


def _source(t: Task, source: str | None):
    """(path, config, fields, label field): the hub's for the task, or a local dataset's (a
    folder or file `datasets.load_dataset` reads: JSON lines, CSV, parquet, ...)."""
    if source is None:
        if t.name not in HF_SOURCES:
            raise DataError(f"no hub source known for {t.name} (known: {', '.join(HF_SOURCES)}); "
                            "give one with --source")
        return HF_SOURCES[t.name]
    # a local dataset names its fields as the bundle does
    return source, None, ("text",) if t.type == "single" else ("text_a", "text_b"), "label"


def _label_map(t: Task, feature) -> dict | None:
    """hub label id -> registry label id, by name; None when the ids already are ours."""
    names = getattr(feature, "names", None)
    if t.problem == "regression" or names is None:
        return None
    ours = {n.lower(): i for i, n in enumerate(t.label_names)}
    missing = [n for n in names if n.lower() not in ours]
    if missing:
        raise DataError(f"{t.name}: the source's labels {missing} are not among {list(t.label_names)}")
    return {i: ours[n.lower()] for i, n in enumerate(names)}


def load_hf(task: str | Task, source: str | None = None, seed: int = 0, **kwargs) -> dict[str, list[Example]]:
    """{split: examples} of `task` for train and validation, from the hub or `source`."""
    t = get_task(task) if isinstance(task, str) else task
    path, name, fields, label = _source(t, source)
    datasets = _datasets()
    try:
        ds = datasets.load_dataset(path, name, **kwargs)
    except Exception as e:   # network, unknown dataset, unreadable files: one line
        raise DataError(f"{t.name}: cannot load {path!r}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if "train" not in ds:
        raise DataError(f"{t.name}: {path!r} has no train split (it has {', '.join(ds)})")
    splits = {"train": ds["train"]}
    if "validation" in ds:
        splits["validation"] = ds["validation"]
    else:   # carve a seeded 10% of train, as the shared bundle does
        order = np.random.default_rng(seed).permutation(len(ds["train"]))
        cut = max(1, len(order) // 10)
        splits = {"train": ds["train"].select(sorted(order[cut:])),
                  "validation": ds["train"].select(sorted(order[:cut]))}
    out = {}
    for split, rows in splits.items():
        for f in (*fields, label):
            if f not in rows.column_names:
                raise DataError(f"{t.name}: {path!r} {split} has no field {f!r} (it has {', '.join(rows.column_names)})")
        remap = _label_map(t, rows.features[label])
        out[split] = [Example(i, r[fields[0]], r[fields[1]] if len(fields) > 1 else None,
                              remap[r[label]] if remap else r[label]) for i, r in enumerate(rows)]
    return out


def write_bundle(task: str | Task, data_dir: str | Path, source: str | None = None, **kwargs) -> Path:
    """Writes <data_dir>/<suite>/<task>/{train,validation}.jsonl.gz and meta.json; returns the
    task's folder. The files then load with loader.load_split like the shared bundle's."""
    t = get_task(task) if isinstance(task, str) else task
    splits = load_hf(t, source, **kwargs)
    folder = Path(data_dir) / t.suite / t.name
    folder.mkdir(parents=True, exist_ok=True)
    for split, examples in splits.items():
        with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
            for e in examples:
                row = {"id": e.id, "text": e.text} if e.text_b is None else {"id": e.id, "text_a": e.text, "text_b": e.text_b}
                f.write(json.dumps({**row, "label": e.label}) + "\n")
    path = source or HF_SOURCES[t.name][0]
    meta = {"task": t.name, "suite": t.suite, "type": t.type, "problem": t.problem, "num_labels": t.num_labels,
            "label_names": list(t.label_names), "metric": t.metric, "source": f"hf:{path}",
            "counts": {k: len(v) for k, v in splits.items()}, "tree": "tinylm data get"}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder
