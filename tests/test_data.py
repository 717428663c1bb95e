"""Task registry, loaders (every task's files load; errors name file and line), metrics."""
import gzip
import json

import pytest

from tinynlp_data import GLUE, TASKS, TINYNLP, DataError, find_data_dir, get_task, load_split, read_jsonl
from tinynlp_data.metrics import accuracy, f1, glue_average, matthews, spearman


def test_registry_has_7_tinynlp_and_9_glue_tasks():
    assert TINYNLP == ["imdb", "ag_news", "cyberbullying", "limit", "emotion", "nlu", "snips"]
    assert len(GLUE) == 9 and get_task("stsb").problem == "regression"
    assert get_task("mnli").num_labels == 3 and get_task("mnli").type == "pair"


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(KeyError) as e:
        get_task("sst5")
    for name in ("imdb", "snips", "cola", "wnli"):
        assert name in str(e.value)


def _have_data():
    try:
        find_data_dir()
        return True
    except DataError:
        return False


@pytest.mark.skipif(not _have_data(), reason="no shared data directory")
@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_loads_and_matches_meta(name):
    t = get_task(name)
    meta = json.loads((find_data_dir() / t.suite / name / "meta.json").read_text())
    assert tuple(meta["label_names"]) == t.label_names and meta["metric"] == t.metric
    val = load_split(name, "validation")
    assert len(val) == meta["counts"]["validation"]
    assert (val[0].text_b is not None) == (t.type == "pair")
    # the train split only for the small files (keeps the test in seconds)
    if meta["counts"]["train"] < 6000:
        assert len(load_split(name, "train")) == meta["counts"]["train"]


def test_missing_data_dir_names_all_three_places(tmp_path, monkeypatch):
    import tinynlp_data.loader as L
    monkeypatch.setenv("TINYLM_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(L, "REPO_ROOT", tmp_path / "repo")
    with pytest.raises(DataError) as e:
        find_data_dir(tmp_path / "flag")
    msg = str(e.value)
    assert "--data-dir" in msg and "TINYLM_DATA" in msg and "shared" in msg


def test_malformed_file_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write('{"id": 0, "text": "ok", "label": 1}\n{"id": 1, "text": "broken", "label": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz:2"):
        read_jsonl(p)
    q = tmp_path / "lab.jsonl"
    q.write_text('{"text": "x", "label": 9}\n')
    with pytest.raises(DataError, match=r"lab\.jsonl:1.*label 9"):
        load_split("emotion", path=q)
    with pytest.raises(DataError, match="no such data file"):
        load_split("emotion", path=tmp_path / "nope.jsonl")


def test_single_file_loader_reads_plain_and_pairs(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"id": 0, "text_a": "a", "text_b": "b", "label": 2.5}\n\n')
    ex = load_split("stsb", path=p)
    assert len(ex) == 1 and ex[0].text_b == "b" and ex[0].label == 2.5


def test_metrics_against_hand_computed_values():
    pred, gold = [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    # tp = 3, fp = 1, fn = 1: F1 = 6 / 8
    assert f1(pred, gold) == pytest.approx(0.75)
    # MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (3 - 1) / sqrt(4*4*2*2) = 0.25
    assert matthews(pred, gold) == pytest.approx(0.25)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks [1,2,3] vs [1,3,2]: 1 - 6*sum d^2 / (n(n^2-1)) = 1 - 6*2/24 = 0.5
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_glue_average():
    assert glue_average({"cola": 0.2, "sst2": 0.8}) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="missing"):
        glue_average({"cola": 0.2}, require_all=True)
    with pytest.raises(ValueError, match="not a GLUE task"):
        glue_average({"emotion": 0.9})


def test_hf_loader_is_optional():
    import tinynlp_data.hf as hf
    with pytest.raises(DataError, match="no HF source"):
        hf.load_hf("limit")
