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
        find_data_dir()
    msg = str(e.value)
    assert str(tmp_path / "env") in msg and str(tmp_path / "shared") in msg and "--data-dir" in msg


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
    with pytest.raises(DataError, match="no hub source known for limit"):
        hf.load_hf("limit")


def test_missing_data_error_names_every_way_to_give_data(tmp_path, monkeypatch):
    import tinynlp_data.loader as L
    monkeypatch.delenv("TINYLM_DATA", raising=False)
    monkeypatch.setattr(L, "REPO_ROOT", tmp_path / "clone")      # a clone with nothing beside it
    with pytest.raises(DataError) as e:
        find_data_dir()
    msg = str(e.value)
    assert "\n" not in msg
    for way in ("--data-dir", "TINYLM_DATA", "--data FILE", "tinylm data get", "../shared/data"):
        assert way in msg, way


def test_explicit_data_dir_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        find_data_dir(tmp_path / "typo")


def test_shipped_sample_loads_as_the_task():
    from tinynlp_data.samples import bundled_sample
    p = bundled_sample("emotion")
    ex = load_split("emotion", path=p)
    assert len(ex) == 200 and {e.label for e in ex} <= set(range(6))


def _local_dataset(tmp_path, labels_as_names=False):
    """A local dataset in the bundle's field names, as `datasets` reads a folder of JSON lines."""
    src = tmp_path / "src"
    src.mkdir()
    for split, n in (("train", 30), ("validation", 10)):
        with open(src / f"{split}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"text": f"text {split} {i}", "label": i % 6}) + "\n")
    return src


def test_data_get_writes_the_bundle_format_from_a_local_dataset(tmp_path):
    pytest.importorskip("datasets")
    from typer.testing import CliRunner

    from tinylm.cli import app
    src = _local_dataset(tmp_path)
    out = tmp_path / "bundle"
    r = CliRunner().invoke(app, ["data", "get", "emotion", "--source", str(src), "--out", str(out)])
    assert r.exit_code == 0, r.output
    val = load_split("emotion", "validation", data_dir=out)
    assert len(val) == 10 and val[3].text == "text validation 3" and val[3].label == 3
    assert len(load_split("emotion", "train", data_dir=out)) == 30
    meta = json.loads((out / "tinynlp" / "emotion" / "meta.json").read_text())
    assert meta["label_names"][0] == "sadness" and meta["counts"] == {"train": 30, "validation": 10}
    r = CliRunner().invoke(app, ["data", "--data-dir", str(out), "--json"])
    st = json.loads(r.output)
    assert st["used"] == str(out) and "emotion" in st["places"][0]["tasks"]
    # what scripts/demo.sh asks before it builds anything
    assert CliRunner().invoke(app, ["data", "--data-dir", str(out), "--has", "emotion"]).exit_code == 0
    (tmp_path / "empty").mkdir()
    assert CliRunner().invoke(app, ["data", "--data-dir", str(tmp_path / "empty"), "--has", "emotion"]).exit_code == 1


def test_data_get_maps_hub_labels_by_name(tmp_path):
    datasets = pytest.importorskip("datasets")
    from tinynlp_data.hf import load_hf
    names = ["joy", "sadness", "surprise", "love", "fear", "anger"]      # another order than ours
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    d = datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}, features=feats)
                              for s in ("train", "validation")})
    d.save_to_disk(str(tmp_path / "ds"))
    got = load_hf("emotion", source="arrow", data_files={s: str(next((tmp_path / "ds" / s).glob("*.arrow")))
                                                         for s in ("train", "validation")})
    assert [e.label for e in got["validation"]] == [1, 0]     # joy -> 1, sadness -> 0 in our order


def test_data_get_without_network_is_one_line(tmp_path):
    pytest.importorskip("datasets")
    from typer.testing import CliRunner

    from tinylm.cli import app
    r = CliRunner().invoke(app, ["data", "get", "emotion", "--source", str(tmp_path / "nothing-here"),
                                 "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "cannot load" in r.output and "Traceback" not in r.output
