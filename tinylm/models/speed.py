"""Tokens/s of one EmbBERT training step (pretraining and finetuning) by conv implementation.

    python -m tinylm.models.speed [--model embbert] [--steps 10]

The figures in docs/embbert.md ("Throughput") come from this, run on one core. Each step is
the real one: pretrain.make_train_step, and a finetuning step with finetune's loss and optimizer
(cross-entropy, AdamW, clip 1.0); batches are random ids, full length (no padding).
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def _time(step, args, steps: int) -> float:
    import jax
    out = step(*args)                                  # compile + one warm-up step
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    for _ in range(steps):
        out = step(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / steps


def pretrain_step_time(config: dict, batch: int, T: int, steps: int) -> float:
    import jax
    from tinylm.models.embbert import PretrainModel
    from tinylm.train.pretrain import PretrainConfig, _optimizer, make_batch, make_train_step
    model, tx = PretrainModel(config), _optimizer(PretrainConfig())
    stream = np.random.default_rng(0).integers(5, config["vocab_size"], 200_000).astype(np.uint16)
    b = make_batch(stream, 0, 0, batch, T, config["vocab_size"])
    params = model.init(jax.random.PRNGKey(0), b["ids"], b["positions"])["params"]
    step = make_train_step(model, tx, True)
    return _time(step, (params, tx.init(params), b, jax.random.PRNGKey(1)), steps)


def finetune_step_time(config: dict, batch: int, T: int, steps: int, n_labels: int = 6) -> float:
    import jax
    import jax.numpy as jnp
    import optax
    from tinylm.models.embbert import classifier_from_config
    model = classifier_from_config(config, n_labels)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(5e-4, weight_decay=0.05))
    x = np.random.default_rng(0).integers(5, config["vocab_size"], (batch, T)).astype(np.int32)
    y = np.zeros((batch,), np.int32)
    params = model.init(jax.random.PRNGKey(0), x)["params"]

    def loss_fn(p, k):
        logits = model.apply({"params": p}, x, deterministic=False, rngs={"dropout": k})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, s, k):
        g = jax.grad(loss_fn)(p, k)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    return _time(step, (params, tx.init(params), jax.random.PRNGKey(1)), steps)


def main(argv=None) -> None:
    from tinylm.models.embbert import get_config
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embbert")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args(argv)
    print("| step | batch x T | conv | s/step | tokens/s |\n|---|---|---|---:|---:|")
    for kind, fn, T in (("pretrain (MLM+NSP)", pretrain_step_time, 128),
                        ("finetune", finetune_step_time, 64), ("finetune", finetune_step_time, 128)):
        for impl in ("grouped", "toeplitz"):
            cfg = dict(get_config(a.model), conv_impl=impl)
            s = fn(cfg, a.batch, T, a.steps)
            print(f"| {kind} | {a.batch} x {T} | {impl} | {s:.3f} | {a.batch * T / s:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
