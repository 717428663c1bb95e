"""--resume continues only the run that was interrupted: the progress file carries the run's
identity, a mismatch is refused by field, a torn last line is repaired, and the resumed score is
the uninterrupted one. (Integer reference engine: seconds; the device engine shares the code.)"""
from __future__ import annotations

import gzip
import json

import pytest

from tinylm.harness.evaluate import EvalError, evaluate
from tinynlp_data import load_split

from conftest import DEFAULT_MODEL, TINY_MODEL


def _stop_after(n):
    def cb(done, total, rec):
        if done == n:
            raise KeyboardInterrupt
    return cb


def _lines(out):
    return out.with_name(out.name + ".progress.jsonl").read_text().splitlines()


def _data_file(path, examples):
    with gzip.open(path, "wt") as f:
        for e in examples:
            f.write(json.dumps({"id": e.id, "text": e.text, "label": e.label}) + "\n")
    return str(path)


@pytest.mark.parametrize("field,first,second", [
    ("seed", {"sample": 12, "seed": 1}, {"sample": 12, "seed": 2}),
    ("sample", {"sample": 12, "seed": 1}, {"sample": 13, "seed": 1}),
    ("limit", {"limit": 10}, {"limit": 5}),
    ("limit", {"limit": 10}, {}),
    ("target_sha256", {"limit": 10}, {"limit": 10, "target": TINY_MODEL}),
])
def test_resume_refuses_another_run_naming_the_field(tmp_path, field, first, second):
    out = tmp_path / "r.json"
    res = evaluate(DEFAULT_MODEL, "emotion", json_out=out, progress=_stop_after(3), **first)
    assert res["complete"] is False
    second = dict(second)
    target = second.pop("target", DEFAULT_MODEL)
    with pytest.raises(EvalError, match=f"cannot resume.*{field}") as e:
        evaluate(target, "emotion", json_out=out, resume=True, **second)
    assert "\n" not in str(e.value) and "without --resume" in str(e.value)


def test_resume_refuses_a_changed_data_file(tmp_path):
    examples = load_split("emotion", "validation")[:20]
    data = _data_file(tmp_path / "d.jsonl.gz", examples[:10])
    out = tmp_path / "r.json"
    evaluate(DEFAULT_MODEL, "emotion", data=data, json_out=out, progress=_stop_after(3))
    _data_file(tmp_path / "d.jsonl.gz", examples[10:])          # same path, other examples
    with pytest.raises(EvalError, match="cannot resume.*data_sha256"):
        evaluate(DEFAULT_MODEL, "emotion", data=data, json_out=out, resume=True)


def test_progress_file_without_identity_is_refused(tmp_path):
    out = tmp_path / "r.json"
    evaluate(DEFAULT_MODEL, "emotion", limit=6, json_out=out, progress=_stop_after(3))
    p = out.with_name(out.name + ".progress.jsonl")
    p.write_text("\n".join(_lines(out)[1:]) + "\n")              # as an older tinylm wrote it
    with pytest.raises(EvalError, match="no run identity"):
        evaluate(DEFAULT_MODEL, "emotion", limit=6, json_out=out, resume=True)


def test_torn_last_line_is_repaired(tmp_path):
    out = tmp_path / "r.json"
    evaluate(DEFAULT_MODEL, "emotion", limit=10, json_out=out, progress=_stop_after(3))
    p = out.with_name(out.name + ".progress.jsonl")
    with p.open("a") as f:
        f.write('{"index": 3, "id": "emo')                   # the write the interruption cut
    res = evaluate(DEFAULT_MODEL, "emotion", limit=10, json_out=out, resume=True)
    assert res["complete"] and res["examples"] == 10 and res["repaired"]
    recs = [json.loads(line) for line in _lines(out)[1:]]     # every line parses again
    assert sorted(r["index"] for r in recs) == list(range(10))
    again = evaluate(DEFAULT_MODEL, "emotion", limit=10, json_out=out, resume=True)
    assert again["examples"] == 10 and not again["repaired"] and len(_lines(out)) == 11


@pytest.mark.parametrize("kw", [{"limit": 16}, {"sample": 16, "seed": 3}], ids=["limit", "sample"])
def test_resumed_score_equals_an_uninterrupted_run(tmp_path, kw):
    whole = evaluate(DEFAULT_MODEL, "emotion", json_out=tmp_path / "whole.json", **kw)
    out = tmp_path / "r.json"
    for stop in (4, 9):
        part = evaluate(DEFAULT_MODEL, "emotion", json_out=out, resume=stop != 4, progress=_stop_after(stop), **kw)
        assert part["complete"] is False and part["examples"] == stop
    res = evaluate(DEFAULT_MODEL, "emotion", json_out=out, resume=True, **kw)
    assert res["complete"] and res["examples"] == whole["examples"] == 16
    assert res["score"] == whole["score"]
    by_index = lambda f: {r["index"]: r["logits"] for r in map(json.loads, _lines(f)[1:])}  # noqa: E731
    assert by_index(out) == by_index(tmp_path / "whole.json")


def test_every_identity_field_is_compared(tmp_path):
    """Each field of the identity, changed alone, is refused by name (engine and task included,
    which the end-to-end cases above cannot vary cheaply)."""
    from tinylm.harness import progress as P
    run = P.identity(target_sha256="a" * 64, engine="device", task="emotion", data_sha256="b" * 64,
                     sample=None, seed=0, limit=24)
    p = tmp_path / "p.jsonl"
    P.start_run(p, run)
    assert P.resume_run(p, run, ["x"]) == ({}, False)
    for field, value in [("engine", "reference"), ("task", "sst2"), ("data_sha256", "c" * 64),
                         ("target_sha256", "d" * 64), ("limit", 25), ("sample", 5)]:
        with pytest.raises(P.ProgressError, match=f"{field} was"):
            P.resume_run(p, {**run, field: value}, ["x"])
    assert P.identity(target_sha256="", engine="", task="", data_sha256="", sample=None, seed=7, limit=None)["seed"] is None
