"""Quantization-aware training of EmbBERT whose forward IS the integer graph (EmbBERT-Q).

`tinylm quantize RUN --qat`: PTQ scales, a few epochs of QAT on the task's train split with the
straight-through forward of tinylm/quant/qat_forward.py, the best epoch on validation measured
with the integer forward of the LOWERED graph (epoch 0 = PTQ itself, so QAT never exports
something worse on validation), and the ONNX written by quant/embbert.quantize_params with the
same scales.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from tinylm.quant import embbert as QE
from tinylm.quant.qat_forward import IntModel, _np_ip, _pad_batch, constants, exact_jax, forward, ip_from_float, \
    scales_from_calibration


class QAT:
    """Holds the fixed scales/constants and the jitted step and eval functions."""

    def __init__(self, config: dict, S: dict, max_len: int, lr: float = 2e-5, weight_decay: float = 0.0):
        import jax
        import jax.numpy as jnp
        import optax
        self.config, self.S, self.max_len = config, dict(S), int(max_len)
        self.consts = constants(S, config)
        layers = config["layers"]
        self.tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=weight_decay))

        def loss_fn(p, x, y, w):
            ip, ws = ip_from_float(p, self.S, self.consts, config, self.max_len)
            _, fl = forward(ip, x, layers, params=p, S=self.S, ws=ws)
            per = optax.softmax_cross_entropy_with_integer_labels(fl, y)
            return (per * w).sum() / jnp.maximum(w.sum(), 1.0)

        def step(p, s, x, y, w):
            loss, g = jax.value_and_grad(loss_fn)(p, x, y, w)
            u, s = self.tx.update(g, s, p)
            return optax.apply_updates(p, u), s, loss

        def eval_fn(p, x):
            ip, ws = ip_from_float(p, self.S, self.consts, config, self.max_len)
            return forward(ip, x, layers, params=p, S=self.S, ws=ws)

        with exact_jax():
            self._step = jax.jit(step)
            self._eval = jax.jit(eval_fn)
            self._ip = jax.jit(lambda p: ip_from_float(p, self.S, self.consts, config, self.max_len)[0])

    def init(self, params):
        import jax
        import jax.numpy as jnp
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
        with exact_jax():
            return params, self.tx.init(params)

    def step(self, params, opt_state, x, y, w):
        with exact_jax():
            return self._step(params, opt_state, x, np.asarray(y, np.int32), np.asarray(w, np.float32))

    def loss(self, params, x, y, w):
        """The training loss (cross-entropy on the QAT forward's logits), without a gradient."""
        _, f = self.eval_logits(params, x)
        f = f.astype(np.float64)
        lse = np.log(np.exp(f - f.max(-1, keepdims=True)).sum(-1)) + f.max(-1)
        per = lse - f[np.arange(len(y)), np.asarray(y)]
        w = np.asarray(w, np.float64)
        return float((per * w).sum() / max(w.sum(), 1.0))

    def eval_logits(self, params, x):
        """(int logits, surrogate float logits) of the QAT forward on a padded batch."""
        with exact_jax():
            q, f = self._eval(params, x)
        return np.asarray(q), np.asarray(f)

    def int_params(self, params) -> dict:
        with exact_jax():
            return _np_ip(self._ip(params))

    def lower(self, params, label_names, *, name: str, task: str | None, tokenizer_json: str, n_calib: int = 0):
        """onnx.ModelProto of the float params lowered with the QAT scales."""
        import jax
        p = jax.device_get(params)
        return QE.quantize_params(p, self.config, label_names, [], name=name, task=task,
                                  tokenizer_json=tokenizer_json, max_len=self.max_len, scales=self.S,
                                  quantization="qat")


def qat_run(run_dir, out, epochs: int = 2, lr: float = 5e-5, batch_size: int = 32, calib: int = 256,
            limit: int | None = None, name: str | None = None, data_dir=None, seed: int = 0,
            on_log: Callable[[dict], None] | None = None) -> dict:
    """QAT of an EmbBERT float run -> EmbBERT-Q ONNX at `out` (the best epoch on validation,
    measured with the integer forward of the lowered graph; epoch 0 is PTQ)."""
    from tinynlp_data import get_task, load_split

    from tinylm import graph as G
    from tinylm.graph import reference
    from tinylm.train.finetune import score
    from tinylm.tokenizer import encode_examples
    from tinylm.train.floatrun import FloatRun
    from tinylm.tokenizer import encode
    run = FloatRun(run_dir)
    if run.arch != "embbert":
        raise ValueError(f"{run_dir}: arch {run.arch!r} is not embbert")
    task = get_task(run.task)
    if task.problem == "regression":
        raise ValueError(f"{run.task}: QAT supports classification tasks only")
    t0 = time.time()
    train = load_split(run.task, "train", data_dir)
    val = load_split(run.task, "validation", data_dir)
    # the same calibration sequences as `tinylm quantize` without --qat
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train), size=min(calib, len(train)), replace=False)
    calib_seqs = [encode(run.tokenizer, train[i].text, train[i].text_b, run.max_len) for i in pick]
    if limit is not None and len(train) > limit:
        sel = np.random.default_rng(seed).permutation(len(train))[:limit]
        train = [train[i] for i in sorted(sel)]
    tr_ids, va_ids = encode_examples(run.tokenizer, train, run.max_len), encode_examples(run.tokenizer, val, run.max_len)
    tr_y = np.asarray([e.label for e in train], np.int32)
    va_y = [e.label for e in val]
    S = scales_from_calibration(run.params, run.config, calib_seqs)
    qat = QAT(run.config, S, run.max_len, lr=lr)
    params, opt_state = qat.init(run.params)
    tok_json = run.tokenizer.to_str()
    name = name or f"{run.task}-{run.meta.get('config_name', 'embbert')}-qat"
    layers = run.config["layers"]

    def lower(p):
        return qat.lower(p, run.label_names, name=name, task=run.task, tokenizer_json=tok_json)

    def val_score(model):
        return float(score(task, IntModel(model, layers).logits(va_ids).astype(np.float64), va_y)), model

    steps = -(-len(tr_ids) // batch_size)
    best, best_model = val_score(lower(params))
    best_epoch, history = 0, [dict(epoch=0, val=best, note="PTQ (the float weights, QAT scales)")]
    if on_log:
        on_log(dict(total=steps * epochs, done=0, info=f"epoch 0 (PTQ): validation {best:.4f}"))
    order_rng = np.random.default_rng(seed)
    done = 0
    for epoch in range(1, epochs + 1):
        order = order_rng.permutation(len(tr_ids))
        losses = []
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x = _pad_batch([tr_ids[j] for j in idx], batch_size)
            y = np.zeros(batch_size, np.int32)
            y[:len(idx)] = tr_y[idx]
            w = np.zeros(batch_size, np.float32)
            w[:len(idx)] = 1.0
            params, opt_state, loss = qat.step(params, opt_state, x, y, w)
            done += 1
            if done % 10 == 0:
                losses.append(float(loss))
                if on_log:
                    on_log(dict(total=steps * epochs, done=done, info=f"epoch {epoch} loss {losses[-1]:.3f}"))
        s, model = val_score(lower(params))
        history.append(dict(epoch=epoch, val=s, train_loss=float(np.mean(losses)) if losses else None,
                            elapsed_s=round(time.time() - t0, 1)))
        if s > best:
            best, best_model, best_epoch = s, model, epoch
        if on_log:
            on_log(dict(total=steps * epochs, done=done, info=f"epoch {epoch}: validation {s:.4f} (best {best:.4f})"))
    # the exported graph must be what was measured: spot-check it against the reference
    G.save(best_model, out)
    g = G.load(out)
    check = va_ids[:16]
    for ids, row in zip(check, IntModel(g, layers).logits(check)):
        want = reference.run(g, ids)
        if want.tolist() != row.tolist():
            Path(out).unlink()
            raise RuntimeError(f"QAT integer forward {row.tolist()} != reference {want.tolist()} on {ids}")
    return dict(out=str(out), score=best, best_epoch=best_epoch, history=history, metric=task.metric,
                wall_s=round(time.time() - t0, 1), n_train=len(train), n_val=len(val))
