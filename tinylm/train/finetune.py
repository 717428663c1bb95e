"""Finetuning a pretrained EmbBERT on one task, and the benchmark over a suite.

Head: Linear(d, C) on position 0 (C = 1 and MSE for the regression task STS-B, cross-entropy
otherwise). AdamW with a short linear warm-up then a constant learning rate, weight decay 0.05,
batch 32 (the authors' recipe), best epoch chosen on the validation split. The output is a run
directory in the floatrun contract: run.json, tokenizer.json, params.msgpack.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tinylm.tokenizer import encode_examples, load_tokenizer

# The authors' TinyNLP accuracies (fp32, mean of 5 runs), from the model doc.
AUTHORS_TINYNLP = {"imdb": 84.10, "ag_news": 90.46, "cyberbullying": 83.97, "limit": 76.36,
                   "emotion": 89.58, "nlu": 88.16, "snips": 97.67}
AUTHORS_TINYNLP_AVG = 87.19


class FinetuneError(ValueError):
    pass


@dataclass
class FinetuneConfig:
    epochs: int = 5
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 100
    weight_decay: float = 0.05
    max_len: int = 128
    seed: int = 0
    max_train: int | None = None
    max_minutes: float | None = None


def load_pretrained(pre: str | Path):
    """(config, tokenizer, backbone params) of a pretraining run directory."""
    from tinylm.models.embbert import backbone_param_shapes, load_params
    pre = Path(pre)
    meta_path = pre / "run.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FinetuneError(f"{pre}: not a pretraining run directory ({e})") from None
    if meta.get("arch") != "embbert" or "config" not in meta:
        raise FinetuneError(f"{meta_path}: not an EmbBERT run (arch {meta.get('arch')!r})")
    config = meta["config"]
    tok = load_tokenizer(pre / "tokenizer.json")
    path = pre / "backbone.msgpack"
    if not path.is_file():
        raise FinetuneError(f"{path}: missing (pretrain writes it with every checkpoint)")
    params = load_params(backbone_param_shapes(config), path.read_bytes(), str(path))
    return config, tok, params, meta


def _bucket(n: int, max_len: int) -> int:
    return min(max_len, max(16, -(-n // 16) * 16))


def _batches(ids: list[list[int]], order: np.ndarray, batch_size: int, max_len: int):
    """Fixed batch size (the last one padded with empty rows), length padded to a multiple of 16."""
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        T = _bucket(max(len(ids[j]) for j in idx), max_len)
        x = np.zeros((batch_size, T), np.int32)
        for r, j in enumerate(idx):
            x[r, :len(ids[j])] = ids[j]
        yield idx, x


def predict_logits(apply_fn, params, ids, batch_size, max_len, num_out):
    out = np.zeros((len(ids), num_out), np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")   # similar lengths together
    for idx, x in _batches(ids, order, batch_size, max_len):
        out[idx] = np.asarray(apply_fn(params, x))[:len(idx)]
    return out


def score(task, logits, gold) -> float:
    from tinynlp_data import compute_metric
    pred = logits[:, 0] if task.problem == "regression" else logits.argmax(-1)
    return compute_metric(task.metric, pred, np.asarray(gold))


def finetune(pre: str | Path, task_name: str, out: str | Path, cfg: FinetuneConfig = FinetuneConfig(),
             data_dir=None, on_log: Callable[[dict], None] | None = None,
             train_examples=None, val_examples=None) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import serialization
    from tinynlp_data import get_task, load_split
    from tinylm.models.embbert import classifier_from_config

    task = get_task(task_name)
    config, tok, backbone, pre_meta = load_pretrained(pre)
    if cfg.max_len > config["max_len"]:
        raise FinetuneError(f"max_len {cfg.max_len} exceeds the model's max_len {config['max_len']}")
    train = train_examples if train_examples is not None else load_split(task, "train", data_dir)
    val = val_examples if val_examples is not None else load_split(task, "validation", data_dir)
    if cfg.max_train is not None and len(train) > cfg.max_train:
        pick = np.random.default_rng(cfg.seed).permutation(len(train))[:cfg.max_train]
        train = [train[i] for i in sorted(pick)]
    t0 = time.time()
    tr_ids, va_ids = encode_examples(tok, train, cfg.max_len), encode_examples(tok, val, cfg.max_len)
    regression = task.problem == "regression"
    tr_y = np.asarray([e.label for e in train], np.float32 if regression else np.int32)
    va_y = [e.label for e in val]
    n_out = task.num_labels

    model = classifier_from_config(config, n_out)
    key = jax.random.PRNGKey(cfg.seed)
    params = model.init(key, np.zeros((1, 16), np.int32))["params"]
    params = dict(params)
    params["backbone"] = backbone
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
        optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, max(1, cfg.warmup)),
                              optax.constant_schedule(cfg.lr)], [max(1, cfg.warmup)]),
        weight_decay=cfg.weight_decay))
    opt_state = tx.init(params)

    def loss_fn(p, x, y, w, k):
        logits = model.apply({"params": p}, x, deterministic=False, rngs={"dropout": k})
        if regression:
            per = (logits[:, 0] - y) ** 2
        else:
            per = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return (per * w).sum() / jnp.maximum(w.sum(), 1.0)

    @jax.jit
    def train_step(p, s, x, y, w, k):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y, w, k)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    apply_fn = jax.jit(lambda p, x: model.apply({"params": p}, x, deterministic=True))
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = -(-len(tr_ids) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    best, best_params, best_epoch, history, done, step = -np.inf, params, 0, [], 0, 0
    stopped_early = False
    for epoch in range(1, cfg.epochs + 1):
        order = rng.permutation(len(tr_ids))
        losses, ep_t0, ep_tok = [], time.time(), 0
        for idx, x in _batches(tr_ids, order, cfg.batch_size, cfg.max_len):
            y = np.zeros((cfg.batch_size,), tr_y.dtype)
            y[:len(idx)] = tr_y[idx]
            w = np.zeros((cfg.batch_size,), np.float32)
            w[:len(idx)] = 1.0
            params, opt_state, loss = train_step(params, opt_state, x, y, w, jax.random.fold_in(key, step))
            step += 1
            done += 1
            ep_tok += int((x != 0).sum())
            if done % 20 == 0:
                losses.append(float(loss))
                if on_log:
                    on_log(dict(total=total, done=done, info=f"epoch {epoch} loss {losses[-1]:.3f} "
                                f"{ep_tok / max(time.time() - ep_t0, 1e-9):.0f} tok/s"))
            if cfg.max_minutes is not None and time.time() - t0 > 60 * cfg.max_minutes:
                stopped_early = True
                break
        s = score(task, predict_logits(apply_fn, params, va_ids, 64, cfg.max_len, n_out), va_y)
        history.append(dict(epoch=epoch, train_loss=float(np.mean(losses)) if losses else None,
                            val=s, elapsed_s=round(time.time() - t0, 1)))
        if s > best:
            best, best_params, best_epoch = s, jax.device_get(params), epoch
        if on_log:
            on_log(dict(total=total, done=done, epoch_end=True,
                        info=f"epoch {epoch}: validation {task.metric} {s:.4f} (best {best:.4f})"))
        if stopped_early:
            break
    wall = time.time() - t0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = dict(task=task.name, metric=task.metric, score=float(best), best_epoch=best_epoch,
               max_len=cfg.max_len,
               wall_s=round(wall, 1), n_train=len(train), n_val=len(val),
               stopped_early=stopped_early)
    meta = dict(arch="embbert", config=config, task=task.name, label_names=list(task.label_names),
                max_len=cfg.max_len, metric=task.metric, validation_score=float(best),
                best_epoch=best_epoch, history=history, finetune=asdict(cfg), wall_s=round(wall, 1),
                n_train=len(train), n_val=len(val), stopped_early=stopped_early,
                pretrained_from=str(pre), pretrain_tokens=pre_meta.get("tokens"))
    (out / "run.json").write_text(json.dumps(meta, indent=1))
    (out / "tokenizer.json").write_text(tok.to_str())
    (out / "params.msgpack").write_bytes(serialization.to_bytes(best_params))
    return res


def bench(pre, suite: str = "tinynlp", out=None, tasks=None, epochs: int = 3, max_len: int = 128,
          lr: float = 5e-4, seed: int = 0, max_train=None, minutes=None, data_dir=None,
          log: Callable[[str], None] = print, reuse: bool = False,
          task_max_len: dict | None = None) -> dict:
    """Finetunes every task of a suite (or `tasks`), returns rows and a markdown table."""
    from tinynlp_data import GLUE, TINYNLP, get_task
    from tinynlp_data.metrics import glue_average
    names = {"tinynlp": TINYNLP, "glue": GLUE}.get(suite)
    if names is None:
        raise ValueError(f"unknown suite {suite!r}; known: tinynlp, glue")
    for t in tasks or []:
        if get_task(t).suite != suite:
            raise ValueError(f"task {t!r} is not in suite {suite}")
    names = [n for n in names if not tasks or n in tasks]
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
        cfg = FinetuneConfig(epochs=epochs, lr=lr, max_len=ml, seed=seed, max_train=max_train,
                             max_minutes=minutes)
        log(f"[bench] {name}: finetuning ...")
        r = finetune(pre, name, out / name, cfg, data_dir=data_dir) | {"max_len": ml}
        log(f"[bench] {name}: validation {r['metric']} {r['score']:.4f} in {r['wall_s']:.0f} s")
        rows.append(r)
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    lines = ["| task | metric | validation (ours) | authors (test, fp32) | best epoch | max_len | train examples | finetune wall s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        a = AUTHORS_TINYNLP.get(r["task"])
        lines.append(f"| {r['task']} | {r['metric']} | {100 * r['score']:.2f} | "
                     f"{'%.2f' % a if a is not None else '-'} | {r['best_epoch']} | {r['max_len']} | {r['n_train']} | {r['wall_s']:.0f} |")
    avg = float(np.mean([100 * r["score"] for r in rows])) if rows else float("nan")
    if suite == "tinynlp":
        ref = np.mean([AUTHORS_TINYNLP[r["task"]] for r in rows]) if rows else float("nan")
        lines.append(f"| **average ({len(rows)}/7)** | | **{avg:.2f}** | {ref:.2f} (all 7: {AUTHORS_TINYNLP_AVG}) | | | | |")
    else:
        g = glue_average({r["task"]: r["score"] for r in rows})
        lines.append(f"| **GLUE average ({len(rows)}/9)** | | **{100 * g:.2f}** | | | | | |")
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    return dict(rows=rows, average=avg, table=table)
