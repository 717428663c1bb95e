"""The bar every model must clear: a bag-of-words linear classifier per task (scikit-learn).

Two variants, both trained on a task's train split and scored on its validation split with the
task's metric (logistic regression; Ridge for the regression task STS-B):

- "tfidf":  TfidfVectorizer, word 1-2-grams, sublinear tf, min_df 2. Weight bytes are counted
            as float32: vocabulary x classes x 4 (+ biases), the size of a plain deployment.
- "hashed": HashingVectorizer, 4,096 features, the same n-grams, sublinear tf and L2 norm but
            no idf, so the feature map has no learned table and fits a microcontroller. Its
            weights are quantized to int8 (one symmetric scale per class) and it is *scored
            with the int8 weights*; weight bytes = 4,096 x classes + 4 per bias (int32).

Binary tasks store one weight row in scikit-learn; the byte counts still use `classes` rows
(one logit per class, as our models' heads do), so they are an upper bound by 2x there.

Pair tasks (text_a, text_b): features [phi(a), phi(b), phi(a) * phi(b), cos(a, b)]. The
element-wise product and the cosine carry word overlap, which is most of what a bag of words
can know about a pair; the feature count (and the weights) are 3x those of a single-text task
plus one.

The regularisation strength is chosen from a tiny fixed grid (C_GRID; Ridge alpha = 1 / C) on a
seeded 10% holdout of the *train* split, then the model is refit on the whole train split.
Validation is never used for the choice, so its score is not tuned on. Everything is
deterministic: fixed seed for the holdout, deterministic solvers.
"""
from __future__ import annotations

import time

import numpy as np

from tinylm.extras import require

NGRAMS = (1, 2)
HASHED_FEATURES = 4096
C_GRID = (1.0, 4.0, 16.0)
HOLDOUT = 0.1
SEED = 0
VARIANTS = ("tfidf", "hashed")


def _sklearn():
    require("sklearn", "baseline")   # one-line error when the extra is missing
    from scipy import sparse
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge
    return sparse, TfidfVectorizer, HashingVectorizer, LogisticRegression, Ridge


class _Features:
    """Text -> sparse features for one variant; pairs become [a, b, a*b, cos]."""

    def __init__(self, kind: str, pair: bool, hashed_ngrams=NGRAMS):
        sparse, Tfidf, Hashing, _, _ = _sklearn()
        self.sparse, self.kind, self.pair = sparse, kind, pair
        if kind == "tfidf":
            self.vec = Tfidf(ngram_range=NGRAMS, sublinear_tf=True, min_df=2, dtype=np.float32)
        elif kind == "hashed":
            self.vec = Hashing(n_features=HASHED_FEATURES, ngram_range=tuple(hashed_ngrams),
                               alternate_sign=False, norm=None, dtype=np.float32)
        else:
            raise ValueError(f"unknown baseline variant {kind!r}; known: {', '.join(VARIANTS)}")

    def _one(self, texts, fit: bool):
        if self.kind == "tfidf":
            return self.vec.fit_transform(texts) if fit else self.vec.transform(texts)
        x = self.vec.transform(texts).tocsr()
        x.data = 1.0 + np.log(x.data)          # sublinear tf, as the TF-IDF variant
        norms = np.sqrt(np.asarray(x.multiply(x).sum(1))).ravel()
        norms[norms == 0] = 1.0
        return self.sparse.diags(1.0 / norms).astype(np.float32) @ x

    def __call__(self, examples, fit: bool = False):
        if not self.pair:
            return self._one([e.text for e in examples], fit)
        a_txt, b_txt = [e.text for e in examples], [e.text_b or "" for e in examples]
        if fit and self.kind == "tfidf":       # one vocabulary over both sides
            self.vec.fit(a_txt + b_txt)
        a, b = self._one(a_txt, False), self._one(b_txt, False)
        ab = a.multiply(b).tocsr()
        # both sides are L2-normalised, so the row sum of a*b is their cosine: one feature that a
        # linear model could otherwise only assemble from a weight per shared word
        cos = self.sparse.csr_matrix(np.asarray(ab.sum(1), np.float32))
        return self.sparse.hstack([a, b, ab, cos]).tocsr()

    @property
    def n_features(self) -> int:
        base = len(self.vec.vocabulary_) if self.kind == "tfidf" else HASHED_FEATURES
        return 3 * base + 1 if self.pair else base


def _model(task, C: float):
    _, _, _, LogisticRegression, Ridge = _sklearn()
    if task.problem == "regression":
        return Ridge(alpha=1.0 / C, random_state=SEED)
    return LogisticRegression(C=C, max_iter=2000, random_state=SEED)


def _int8(model):
    """Quantizes the weights in place (per-class symmetric int8, dequantized) for scoring."""
    w = np.atleast_2d(model.coef_)
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    model.coef_ = (np.clip(np.round(w / scale), -127, 127) * scale).reshape(model.coef_.shape)


def _score(task, model, x, gold) -> float:
    from tinynlp_data import compute_metric
    return compute_metric(task.metric, model.predict(x), gold)


def fit_variant(task, train, val, kind: str, hashed_ngrams=NGRAMS) -> dict:
    """Fits one variant on `train`, scores it on `val`; returns its record."""
    t0 = time.time()
    y = np.array([e.label for e in train], np.float64 if task.problem == "regression" else np.int64)
    gold = [e.label for e in val]
    # C from the grid on a seeded holdout of train (features refit on the rest: no leak)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(train))
    n_hold = max(1, int(round(HOLDOUT * len(train))))
    hold, rest = order[:n_hold], order[n_hold:]
    feats = _Features(kind, task.type == "pair", hashed_ngrams)
    x_rest = feats([train[i] for i in rest], fit=True)
    x_hold = feats([train[i] for i in hold])
    grid = {}
    for C in C_GRID:
        m = _model(task, C).fit(x_rest, y[rest])
        if kind == "hashed":
            _int8(m)
        grid[C] = _score(task, m, x_hold, y[hold])
    best_C = max(C_GRID, key=lambda c: (grid[c], -c))   # ties: the stronger regularisation
    feats = _Features(kind, task.type == "pair", hashed_ngrams)
    x = feats(train, fit=True)
    model = _model(task, best_C).fit(x, y)
    x_val = feats(val)
    rec = dict(variant=kind, C=best_C, holdout_scores={str(c): round(s, 4) for c, s in grid.items()},
               n_features=feats.n_features, classes=task.num_labels)
    if kind == "hashed":
        rec["score_float"] = _score(task, model, x_val, gold)
        _int8(model)
        rec["weight_bytes"] = feats.n_features * task.num_labels + 4 * task.num_labels
        rec["weight_dtype"] = "int8"
        rec["ngrams"] = list(hashed_ngrams)
    else:
        rec["vocabulary"] = len(feats.vec.vocabulary_)
        rec["weight_bytes"] = 4 * (feats.n_features * task.num_labels + task.num_labels)
        rec["weight_dtype"] = "float32"
    rec["score"] = _score(task, model, x_val, gold)
    rec["wall_s"] = round(time.time() - t0, 1)
    return rec


def out_of_fold_log_proba(task, train, folds: int = 5) -> np.ndarray:
    """[len(train), classes] log-probabilities of the TF-IDF + LR model on each training example,
    each from the model fit on the other folds (seeded): soft targets for distilling the bag of
    words into a transformer (`finetune --teacher tfidf`). In-sample probabilities would be
    useless as targets -- the linear model fits its training set almost perfectly."""
    from threadpoolctl import threadpool_limits
    if task.problem == "regression":
        raise ValueError(f"{task.name} is a regression task: the bag-of-words teacher gives class probabilities")
    _sklearn()
    y = np.array([e.label for e in train], np.int64)
    out = np.zeros((len(train), task.num_labels), np.float32)
    order = np.random.default_rng(SEED).permutation(len(train))
    with threadpool_limits(1):
        C = fit_variant(task, train, train[:1], "tfidf")["C"]     # C from the train holdout only
        for k in range(folds):
            hold = np.sort(order[k::folds])
            rest = np.setdiff1d(order, hold)
            feats = _Features("tfidf", task.type == "pair")
            m = _model(task, C).fit(feats([train[i] for i in rest], fit=True), y[rest])
            lp = m.predict_log_proba(feats([train[i] for i in hold]))
            out[np.ix_(hold, m.classes_)] = lp
            missing = np.setdiff1d(np.arange(task.num_labels), m.classes_)
            out[np.ix_(hold, missing)] = -30.0               # a class absent from a fold: ~0
    return out


def run_task(name: str, data_dir=None, variants=VARIANTS, hashed_ngrams=NGRAMS) -> dict:
    """Both variants (or `variants`) on one task: {task, metric, n_train, n_val, <variant>: record}."""
    from tinynlp_data import get_task, load_split
    _sklearn()                                   # fail before reading any data
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
    task = get_task(name)
    train = load_split(task, "train", data_dir)
    val = load_split(task, "validation", data_dir)
    out = dict(task=task.name, metric=task.metric, n_train=len(train), n_val=len(val))
    # one BLAS thread: the solves are small, and threads on a busy 2-core machine made them
    # 5-30x slower (and single-threaded sums do not depend on the machine's core count)
    with threadpool_limits(1):
        for kind in variants:
            out[kind] = fit_variant(task, train, val, kind, hashed_ngrams)
    return out


def bench_column(rows: list[dict], out, data_dir=None, log=print) -> str:
    """For `tinylm bench`: sets r["baseline"] (TF-IDF + LR validation score) on each of its rows,
    cached in OUT/<task>/baseline.json. Returns "" or a note saying why the column is empty."""
    import json
    from pathlib import Path

    from tinylm.extras import MissingExtra
    from tinynlp_data import DataError
    for r in rows:
        cache = Path(out) / r["task"] / "baseline.json"
        try:
            rec = json.loads(cache.read_text()) if cache.is_file() else run_task(r["task"], data_dir, ("tfidf",))
        except (MissingExtra, DataError) as e:     # the bench still reports its models without it
            return f"baseline: skipped ({e})"
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(rec, indent=1))
        r["baseline"] = rec["tfidf"]["score"]
        log(f"[bench] {r['task']}: baseline TF-IDF + LR {r['baseline']:.4f}")
    return ""


def table(rows: list[dict]) -> str:
    """Markdown: task, metric, TF-IDF score and bytes, hashed-4096 score and bytes, averages."""
    from tinynlp_data.metrics import glue_average
    ng = next((r["hashed"]["ngrams"] for r in rows if "hashed" in r), list(NGRAMS))
    hashed = f"hashed-{HASHED_FEATURES}" + (f" ({ng[0]}-{ng[1]}-grams)" if tuple(ng) != NGRAMS else "")
    lines = ["| task | metric | TF-IDF + LR | TF-IDF weight bytes (float32) | "
             f"{hashed} + LR (int8) | hashed weight bytes (int8) |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        cells = []
        for kind in VARIANTS:
            v = r.get(kind)
            cells += [f"{100 * v['score']:.2f}", f"{v['weight_bytes']:,}"] if v else ["-", "-"]
        lines.append(f"| {r['task']} | {r['metric']} | " + " | ".join(cells) + " |")
    for s, label in (("tinynlp", "average"), ("glue", "GLUE average")):
        part = [r for r in rows if _suite(r["task"]) == s]
        if not part:
            continue
        cells = []
        for kind in VARIANTS:
            scores = {r["task"]: r[kind]["score"] for r in part if kind in r}
            if not scores:
                cells.append("-")
                continue
            avg = glue_average(scores) if s == "glue" else float(np.mean(list(scores.values())))
            cells.append(f"**{100 * avg:.2f}**")
        n = 7 if s == "tinynlp" else 9
        lines.append(f"| **{label} ({len(part)}/{n})** | | {cells[0]} | | {cells[1]} | |")
    return "\n".join(lines)


def _suite(name: str) -> str:
    from tinynlp_data import get_task
    return get_task(name).suite
