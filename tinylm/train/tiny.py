"""Training the spine's small classifier (tinylm/models/tiny.py) on one task: a plain loop.

Writes a run directory (see tinylm/train/floatrun.py) holding the best epoch on validation.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from tinynlp_data import compute_metric, get_task, load_split

from tinylm.tokenizer import encode_examples, load_tokenizer

REPO = Path(__file__).resolve().parents[2]


def padded_ids(tok, examples, max_len: int) -> np.ndarray:
    """[N, max_len] int32 ids of the examples, [PAD]-filled after each one's [SEP]."""
    x = np.zeros((len(examples), max_len), np.int32)
    for i, ids in enumerate(encode_examples(tok, examples, max_len)):
        x[i, :len(ids)] = ids
    return x


def train_tiny(task: str, out: str | Path, config: str = "tiny", epochs: int = 8, batch: int = 64,
               lr: float = 2e-3, seed: int = 0, data_dir=None, train_file=None, val_file=None,
               limit: int | None = None, progress=None) -> dict:
    import jax
    import optax
    from flax import serialization

    from tinylm.models.tiny import CONFIGS, TinyClassifier, TinyConfig

    t = get_task(task)
    if t.problem != "classification":
        raise ValueError(f"the tiny classifier supports classification tasks; {task} is {t.problem}")
    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r}; known: {', '.join(CONFIGS)}")
    cfg = TinyConfig(**CONFIGS[config])
    tok_path = REPO / "models" / f"tokenizer-{cfg.vocab}.json"
    tok = load_tokenizer(tok_path)
    train = load_split(t, "train", data_dir, train_file)
    val = load_split(t, "validation", data_dir, val_file)
    if limit:
        train, val = train[:limit], val[:max(1, limit // 4)]
    xtr, ytr = padded_ids(tok, train, cfg.max_len), np.array([e.label for e in train], np.int32)
    xva, yva = padded_ids(tok, val, cfg.max_len), np.array([e.label for e in val], np.int32)

    model = TinyClassifier(cfg, t.num_labels)
    params = model.init(jax.random.PRNGKey(seed), xtr[:1])["params"]
    steps_per_epoch = max(1, len(xtr) // batch)
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, min(200, steps_per_epoch), steps_per_epoch * epochs)
    opt = optax.adamw(sched, weight_decay=0.01)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, x, y, key):
        def loss_fn(p):
            logits = model.apply({"params": p}, x, deterministic=False, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    predict = jax.jit(lambda p, x: model.apply({"params": p}, x))

    def evaluate(p):
        preds = [np.asarray(predict(p, xva[i:i + 256])).argmax(-1) for i in range(0, len(xva), 256)]
        return compute_metric(t.metric, np.concatenate(preds), yva)

    rng = np.random.default_rng(seed)
    best, best_params, history = -1.0, params, []
    t0 = time.time()
    for epoch in range(epochs):
        perm = rng.permutation(len(xtr))
        losses = []
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            key = jax.random.fold_in(jax.random.PRNGKey(seed + 1), epoch * steps_per_epoch + i)
            params, opt_state, loss = step(params, opt_state, xtr[idx], ytr[idx], key)
            losses.append(float(loss))
            if progress:
                progress(epoch, i, steps_per_epoch, float(loss))
        score = evaluate(params)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val": score})
        if score > best:
            best, best_params = score, params
    wall = time.time() - t0

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.msgpack").write_bytes(serialization.to_bytes(best_params))
    shutil.copy(tok_path, out / "tokenizer.json")
    meta = {"arch": "tiny", "config": cfg.to_dict(), "config_name": config, "task": task,
            "label_names": list(t.label_names), "max_len": cfg.max_len, "metric": t.metric,
            "val_score": best, "history": history, "train_seconds": round(wall, 1),
            "epochs": epochs, "batch": batch, "lr": lr, "seed": seed,
            "train_examples": len(xtr)}
    (out / "run.json").write_text(json.dumps(meta, indent=2))
    return meta
