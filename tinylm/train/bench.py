"""`tinylm bench`: finetune every task of a suite and tabulate it beside the authors' figures
and the TF-IDF baseline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from tinylm.train.finetune import FinetuneConfig, finetune

# The authors' TinyNLP accuracies (fp32, mean of 5 runs), from the model doc.
AUTHORS_TINYNLP = {"imdb": 84.10, "ag_news": 90.46, "cyberbullying": 83.97, "limit": 76.36,
                   "emotion": 89.58, "nlu": 88.16, "snips": 97.67}
AUTHORS_TINYNLP_AVG = 87.19



def bench(pre, suite: str = "tinynlp", out=None, tasks=None, epochs: int = 3, max_len: int = 128,
          lr: float = 5e-4, seed: int = 0, max_train=None, minutes=None, data_dir=None,
          log: Callable[[str], None] = print, reuse: bool = False,
          task_max_len: dict | None = None, baseline: bool = False, patience: int | None = 3,
          model: str | None = None, teacher: str | None = None, task_tokenizer: int | None = None) -> dict:
    """Finetunes every task of a suite (or `tasks`), returns rows and a markdown table.

    With `baseline`, each row also gets the TF-IDF + logistic-regression validation score
    (tinylm.train.baseline), the bar the model must clear; it is cached in OUT/<task>/baseline.json.
    Off by default here because it refits a linear model per task (seconds to a minute each);
    `tinylm bench` turns it on.

    pre=None trains `model` (default embbert) from scratch on each task; `patience` stops a task
    after that many epochs without a better validation score (None: run all `epochs`; 3 as in
    finetune). `teacher="tfidf"` distils each classification task from the bag of words
    (`finetune --teacher tfidf`; STS-B, a regression, trains without it); `task_tokenizer` (a
    vocabulary size, from scratch only) trains a BPE on each task's training texts first
    (OUT/tokenizers/<task>.json) and the model on it."""
    from tinynlp_data import GLUE, TINYNLP, get_task
    from tinynlp_data.metrics import glue_average
    names = {"tinynlp": TINYNLP, "glue": GLUE}.get(suite)
    if names is None:
        raise ValueError(f"unknown suite {suite!r}; known: tinynlp, glue")
    for t in tasks or []:
        if get_task(t).suite != suite:
            raise ValueError(f"task {t!r} is not in suite {suite}")
    names = [n for n in names if not tasks or n in tasks]
    if pre is None and out is None:
        raise ValueError("from scratch (no pretraining run) the bench needs --out")
    from tinylm.train.distill import BAG_OF_WORDS
    if teacher is not None and teacher != BAG_OF_WORDS:
        raise ValueError(f"the bench distils from the bag of words only (teacher {BAG_OF_WORDS!r}), not {teacher!r}")
    if task_tokenizer and pre is not None:
        raise ValueError("a per-task tokenizer needs a model from scratch (a pretrained backbone has its own)")
    out = Path(out) if out else Path(pre) / f"bench-{suite}"
    rows = []
    for name in names:
        done = out / name / "run.json"
        if reuse and done.is_file():
            m = json.loads(done.read_text())
            r = dict(task=name, metric=m["metric"], score=m["validation_score"], best_epoch=m["best_epoch"],
                     wall_s=m["wall_s"], n_train=m.get("n_train"), max_len=m["max_len"], reused=True)
            log(f"[bench] {name}: reusing {done} ({r['metric']} {r['score']:.4f})")
            rows.append(r)
            continue
        ml = (task_max_len or {}).get(name, max_len)
        t = teacher if teacher and get_task(name).problem != "regression" else None
        cfg = FinetuneConfig(epochs=epochs, lr=lr, max_len=ml, seed=seed, max_train=max_train,
                             max_minutes=minutes, patience=patience, kd_weight=1.0 if t else 0.0)
        tok = None
        if task_tokenizer:
            from tinylm.tokenizer import task_texts, train_tokenizer
            tok = out / "tokenizers" / f"{name}.json"
            tok.parent.mkdir(parents=True, exist_ok=True)
            train_tokenizer(task_texts([name], data_dir), task_tokenizer).save(str(tok))
        log(f"[bench] {name}: {'training from scratch' if pre is None else 'finetuning'}"
            f"{' with its own tokenizer' if tok else ''}{' distilled from the bag of words' if t else ''} ...")
        r = finetune(pre, name, out / name, cfg, data_dir=data_dir, tokenizer=tok, teacher=t,
                     model=(model or "embbert") if pre is None else None) | {"max_len": ml}
        log(f"[bench] {name}: validation {r['metric']} {r['score']:.4f} in {r['wall_s']:.0f} s")
        rows.append(r)
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    note = "baseline: not computed"
    if baseline:
        from tinylm.train.baseline import bench_column
        note = bench_column(rows, out, data_dir, log)
    lines = ["| task | metric | validation (ours) | authors (test, fp32) | baseline (TF-IDF + LR, validation) "
             "| best epoch | max_len | train examples | finetune wall s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a, b = AUTHORS_TINYNLP.get(r["task"]), r.get("baseline")
        lines.append(f"| {r['task']} | {r['metric']} | {100 * r['score']:.2f} | "
                     f"{'%.2f' % a if a is not None else '-'} | {'%.2f' % (100 * b) if b is not None else '-'} | "
                     f"{r['best_epoch']} | {r['max_len']} | {r['n_train']} | {r['wall_s']:.0f} |")
    avg = float(np.mean([100 * r["score"] for r in rows])) if rows else float("nan")
    base = [r["baseline"] for r in rows if r.get("baseline") is not None]
    if suite == "tinynlp":
        ref = np.mean([AUTHORS_TINYNLP[r["task"]] for r in rows]) if rows else float("nan")
        b_avg = f"{100 * np.mean(base):.2f}" if base and len(base) == len(rows) else "-"
        lines.append(f"| **average ({len(rows)}/7)** | | **{avg:.2f}** | {ref:.2f} (all 7: {AUTHORS_TINYNLP_AVG}) "
                     f"| {b_avg} | | | | |")
    else:
        g = glue_average({r["task"]: r["score"] for r in rows})
        b_avg = (f"{100 * glue_average({r['task']: r['baseline'] for r in rows}):.2f}"
                 if base and len(base) == len(rows) else "-")
        lines.append(f"| **GLUE average ({len(rows)}/9)** | | **{100 * g:.2f}** | | {b_avg} | | | | |")
    table = "\n".join(lines) + (f"\n\n{note}" if note else "")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    return dict(rows=rows, average=avg, table=table)

