"""Optional loader through HF `datasets` (for users with access to the hub). Imported lazily;
nothing in tinylm or its tests needs it. Returns the same Example records as loader.py."""
from __future__ import annotations

from .loader import DataError, Example
from .registry import Task, get_task

# task -> (dataset path, config name, text field(s), label field, split renames)
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


def load_hf(task: str | Task, split: str = "validation", **kwargs) -> list[Example]:
    """Examples of `task`/`split` from the HF hub (needs `pip install datasets` and network).

    Note: hub splits differ from the shared bundle (e.g. GLUE 'validation' is the official dev,
    which the bundle holds out); label orders follow the hub's ClassLabel features."""
    t = get_task(task) if isinstance(task, str) else task
    if t.name not in HF_SOURCES:
        raise DataError(f"no HF source known for {t.name}; known: {', '.join(HF_SOURCES)}")
    try:
        import datasets  # noqa: F401  (optional dependency)
    except ImportError:
        raise DataError("the HF loader needs the `datasets` package: pip install datasets") from None
    path, name, fields, label = HF_SOURCES[t.name]
    ds = datasets.load_dataset(path, name, split=split, **kwargs)
    out = []
    for i, row in enumerate(ds):
        a = row[fields[0]]
        b = row[fields[1]] if len(fields) > 1 else None
        out.append(Example(i, a, b, row[label]))
    return out
