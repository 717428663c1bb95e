"""Distilling the bag-of-words baseline into EmbBERT (`finetune --teacher tfidf`): the targets are
out-of-fold TF-IDF + LR log-probabilities, the run trains with them and records them, and a
regression task is refused in one line."""
import json

import numpy as np
import pytest

from conftest import toy_examples  # noqa: E402

pytest.importorskip("sklearn")

TINY = dict(type="embbert", vocab_size=8192, max_len=16, d=16, r=4, layers=1, kernel=4,
            dropout=0.1, init="delta")


def test_targets_are_out_of_fold():
    """Random labels on a chain of shared words (example i has p{i//2} and q{(i+1)//2}, each word
    in two examples, past min_df): a model fit on the examples themselves puts 0.82 of the mass
    on each one's own label; out of fold it cannot do better than chance."""
    from tinynlp_data import Example, get_task
    from tinylm.train.baseline import out_of_fold_log_proba
    rng = np.random.default_rng(0)
    train = [Example(i, f"p{i // 2}x q{(i + 1) // 2}x", None, int(rng.integers(0, 2))) for i in range(200)]
    t = out_of_fold_log_proba(get_task("limit"), train)
    assert t.shape == (200, 2) and t.dtype == np.float32
    np.testing.assert_allclose(np.exp(t).sum(1), 1.0, rtol=1e-5)          # rows are log-probabilities
    y = np.array([e.label for e in train])
    own = np.exp(t[np.arange(200), y])
    assert abs(own.mean() - 0.5) < 0.05, own.mean()                        # in-sample it would be >> 0.5
    learnable = toy_examples(200, 0)                                       # and they carry a real signal
    t2 = out_of_fold_log_proba(get_task("limit"), learnable)
    assert (t2.argmax(1) == np.array([e.label for e in learnable])).mean() > 0.95


def test_finetune_with_the_bag_of_words_teacher(tmp_path):
    from tinylm.train.finetune import FinetuneConfig, finetune
    train, val = toy_examples(96, 0), toy_examples(32, 1)
    runs = {}
    for name, teacher, kd in (("plain", None, 0.0), ("bow", "tfidf", 1.0)):
        cfg = FinetuneConfig(epochs=1, lr=5e-3, warmup=1, max_len=16, batch_size=16, log_every=1,
                             patience=None, kd_weight=kd)
        finetune(None, "limit", tmp_path / name, cfg, model=TINY, train_examples=train,
                 val_examples=val, teacher=teacher)
        runs[name] = [json.loads(x) for x in (tmp_path / name / "log.jsonl").read_text().splitlines()]
    meta = json.loads((tmp_path / "bow" / "run.json").read_text())
    assert meta["teacher"] == "tfidf"
    assert np.load(tmp_path / "bow" / "teacher-tfidf.npy").shape == (96, 2)
    # same seed and batches: the first step's loss differs only by the KL term, which is > 0
    assert runs["bow"][0]["loss"] > runs["plain"][0]["loss"]


def test_regression_task_is_refused(tmp_path):
    from tinynlp_data import Example
    from tinylm.train.distill import DistillError
    from tinylm.train.finetune import FinetuneConfig, finetune
    ex = [Example(i, "a b", "a c", float(i % 5)) for i in range(20)]
    with pytest.raises(DistillError, match="regression"):
        finetune(None, "stsb", tmp_path / "r", FinetuneConfig(epochs=1, max_len=16), model=TINY,
                 train_examples=ex, val_examples=ex, teacher="tfidf")


def test_without_sklearn_the_teacher_names_the_extra(monkeypatch, tmp_path):
    import sys
    from tinynlp_data import get_task
    from tinylm.train.distill import DistillError, bag_of_words_targets
    monkeypatch.setitem(sys.modules, "sklearn", None)          # as if scikit-learn were not installed
    with pytest.raises(DistillError, match=r"^--teacher tfidf: sklearn is not installed: pip install 'tinylm\[baseline\]'$"):
        bag_of_words_targets(get_task("limit"), toy_examples(40, 0), tmp_path / "t.npy")
    assert not (tmp_path / "t.npy").exists()                   # nothing half-written
