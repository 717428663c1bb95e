"""The bag-of-words baseline (tinylm/train/baseline.py, `tinylm baseline`) on tiny synthetic data
in the bundle layout: it learns, the CLI prints its table and JSON, and without scikit-learn the
command ends in one line naming the extra."""
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tinylm.extras import MissingExtra, require

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the a of to and in is it that was for on with as his at by this from".split()


def _write(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"id": i, **r}) + "\n")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """emotion (6 classes, one cue word each among filler) and stsb (score = shared cue words)."""
    d = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    cues = [["sad", "cry"], ["happy", "glad"], ["love", "adore"], ["angry", "mad"], ["afraid", "scared"],
            ["shocked", "amazed"]]

    def single(n):
        out = []
        for _ in range(n):
            y = rng.randrange(6)
            words = rng.choices(WORDS, k=8) + [rng.choice(cues[y])]
            rng.shuffle(words)
            out.append({"text": " ".join(words), "label": y})
        return out

    def pair(n):
        out = []
        for _ in range(n):
            topics = rng.sample([c for cs in cues for c in cs], 6)
            k = rng.randrange(4)       # how many topic words b shares with a
            a = topics[:3] + rng.choices(WORDS, k=4)
            b = topics[:k] + topics[3:6 - k] + rng.choices(WORDS, k=4)
            out.append({"text_a": " ".join(a), "text_b": " ".join(b), "label": 5.0 * k / 3})
        return out

    for split, n in (("train", 600), ("validation", 120)):
        _write(d / "tinynlp" / "emotion" / f"{split}.jsonl.gz", single(n))
        _write(d / "glue" / "stsb" / f"{split}.jsonl.gz", pair(n))
    return d


def test_require_returns_the_module_or_names_the_extra():
    assert require("json", "x") is json
    with pytest.raises(MissingExtra, match=r"^no_such_mod is not installed: pip install 'tinylm\[demo\]'$"):
        require("no_such_mod", "demo")


def test_baseline_learns_both_variants(data_dir):
    pytest.importorskip("sklearn")
    from tinylm.train.baseline import HASHED_FEATURES, run_task
    r = run_task("emotion", data_dir)
    assert r["n_train"] == 600 and r["n_val"] == 120
    assert r["tfidf"]["score"] > 0.9 and r["hashed"]["score"] > 0.9      # chance is 1/6
    assert r["tfidf"]["weight_bytes"] == 4 * (r["tfidf"]["vocabulary"] + 1) * 6
    assert r["hashed"]["weight_bytes"] == HASHED_FEATURES * 6 + 4 * 6
    assert r["tfidf"]["C"] in (1.0, 4.0, 16.0)


def test_baseline_is_deterministic_and_handles_pairs(data_dir):
    pytest.importorskip("sklearn")
    from tinylm.train.baseline import HASHED_FEATURES, run_task

    def strip(r):
        return {k: ({kk: vv for kk, vv in v.items() if kk != "wall_s"} if isinstance(v, dict) else v)
                for k, v in r.items()}
    a, b = run_task("stsb", data_dir), run_task("stsb", data_dir)
    assert strip(a) == strip(b)
    assert a["metric"] == "spearman" and a["tfidf"]["score"] > 0.5 and a["hashed"]["score"] > 0.5
    assert a["hashed"]["n_features"] == 3 * HASHED_FEATURES + 1    # [a, b, a*b, cos]


def _cli(args, block_sklearn=False):
    pre = "import sys; sys.modules['sklearn'] = None; " if block_sklearn else "import sys; "
    code = pre + f"sys.argv = ['tinylm'] + {args!r}; import runpy; runpy.run_module('tinylm', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_prints_the_table_and_writes_json(data_dir, tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "b.json"
    p = _cli(["baseline", "--task", "emotion", "--data-dir", str(data_dir), "--json", str(out)])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[0].startswith("| task | metric | TF-IDF + LR | TF-IDF weight bytes (float32) | hashed-4096")
    assert lines[2].startswith("| emotion | accuracy | ")
    assert lines[-1].startswith("| **average (1/7)** |")
    res = json.loads(out.read_text())
    assert res["rows"][0]["task"] == "emotion" and res["rows"][0]["tfidf"]["score"] > 0.9
    assert res["table"] == p.stdout.strip()


def test_cli_unknown_task_is_one_line(data_dir):
    p = _cli(["baseline", "--task", "sst5", "--data-dir", str(data_dir)])
    assert p.returncode == 2 and "unknown task 'sst5'" in p.stderr and "Traceback" not in p.stderr


def test_without_sklearn_the_command_names_the_extra(data_dir):
    p = _cli(["baseline", "--task", "emotion", "--data-dir", str(data_dir)], block_sklearn=True)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "sklearn is not installed: pip install 'tinylm[baseline]'" in err


def test_bench_table_has_the_baseline_column(data_dir, tmp_path):
    pytest.importorskip("sklearn")
    from tinylm.train.bench import bench
    (tmp_path / "emotion").mkdir()
    (tmp_path / "emotion" / "run.json").write_text(json.dumps(dict(
        metric="accuracy", validation_score=0.5, best_epoch=1, wall_s=1.0, n_train=600, max_len=64)))
    res = bench(tmp_path / "pre", "tinynlp", tmp_path, tasks=["emotion"], reuse=True, data_dir=data_dir,
                log=lambda s: None, baseline=True)
    row = res["rows"][0]
    assert row["baseline"] > 0.9 and (tmp_path / "emotion" / "baseline.json").is_file()
    assert f"| emotion | accuracy | 50.00 | 89.58 | {100 * row['baseline']:.2f} |" in res["table"]
    assert "baseline (TF-IDF + LR, validation)" in res["table"].splitlines()[0]


def test_bench_without_sklearn_notes_the_extra(data_dir, tmp_path, monkeypatch):
    from tinylm.train.bench import bench
    (tmp_path / "emotion").mkdir()
    (tmp_path / "emotion" / "run.json").write_text(json.dumps(dict(
        metric="accuracy", validation_score=0.5, best_epoch=1, wall_s=1.0, n_train=600, max_len=64)))
    monkeypatch.setitem(sys.modules, "sklearn", None)     # import sklearn now raises ImportError
    res = bench(tmp_path / "pre", "tinynlp", tmp_path, tasks=["emotion"], reuse=True, data_dir=data_dir,
                log=lambda s: None, baseline=True)
    assert "| emotion | accuracy | 50.00 | 89.58 | - |" in res["table"]
    assert res["table"].endswith("baseline: skipped (sklearn is not installed: pip install 'tinylm[baseline]')")
