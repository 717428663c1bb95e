"""Finetuning EmbBERT on one task (the benchmark over a suite: tinylm/train/bench.py).

Head: Linear(d, C) on position 0 (C = 1 and MSE for the regression task STS-B, cross-entropy
otherwise). AdamW with a short linear warm-up then a constant learning rate, weight decay 0.05,
batch 32 (the authors' recipe), best epoch chosen on the validation split, early stopping after
`patience` epochs without improvement. The backbone comes from a pretraining run or, with
pre=None, from a fresh init of a config (training from scratch, as the authors' strongest
TinyNLP models were).

The output is a run directory in the floatrun contract (run.json, tokenizer.json, params.msgpack
= the best epoch so far, valid from the first epoch on) plus ckpt.msgpack (the state to resume:
params, optimizer state, best params and score, step, epoch and position in it) and log.jsonl
(a line every `log_every` steps and one per epoch). Batch order is a pure function of
(seed, epoch) and the dropout key is fold_in(seed, step), so a resumed run -- stopped by
`time_budget` at any step, or by a smaller `epochs` -- ends exactly where the uninterrupted run ends.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tinylm.tokenizer import encode_examples, load_tokenizer
from tinylm.train.batches import batches as _batches, predict_windowed, random_windows
from tinylm.train.distill import layer_outputs, teacher_loss

class FinetuneError(ValueError):
    pass


@dataclass
class FinetuneConfig:
    epochs: int = 5                    # the maximum; early stopping usually ends sooner
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 100
    weight_decay: float = 0.05
    max_len: int = 128
    seed: int = 0
    max_train: int | None = None
    max_minutes: float | None = None   # wall-time cap: stop, keep the best epoch, finish the run
    patience: int | None = 3           # stop after this many epochs without a better validation score
    time_budget: float | None = None   # minutes: checkpoint and stop, unfinished (continue with resume)
    log_every: int = 50                # a progress line every N steps (and one per epoch)
    # distillation from a float teacher run of the same architecture (BiPFT, MiniLM): loss =
    # CE + kd_weight * T^2 KL(teacher || student at temperature T) + hidden_weight * the mean
    # over layers of |h_s - h_t|^2 / mean h_t^2 on real tokens
    kd_weight: float = 0.0
    hidden_weight: float = 0.0
    temperature: float = 1.0
    # inputs longer than max_len (up to max_input tokens) as windows window_stride apart
    # (tinylm/graph/windows.py): each epoch trains on one window of each, drawn at random, and
    # validation sums the logits of all windows, as a build made with --windows does
    window_stride: int | None = None
    max_input: int | None = None
    # an exponential moving average of the weights over the steps (Polyak averaging; decay
    # min(ema, (1 + t) / (10 + t)) at step t, so early steps are not dominated by the init):
    # validation, the best epoch and params.msgpack use the average. 0: off (the last weights)
    ema: float = 0.0


# What a resumed run must share with the run that wrote the checkpoint (the rest -- epochs,
# patience, budgets, logging -- may change between sessions).
_RESUME_KEYS = ("batch_size", "lr", "warmup", "weight_decay", "max_len", "seed", "max_train",
                "kd_weight", "hidden_weight", "temperature", "window_stride", "max_input", "ema")


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


def score(task, logits, gold) -> float:
    from tinynlp_data import compute_metric
    pred = logits[:, 0] if task.problem == "regression" else logits.argmax(-1)
    return compute_metric(task.metric, pred, np.asarray(gold))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _start(pre, out: Path, cfg: FinetuneConfig, resume: bool, model, tokenizer, init_from=None, overrides=None):
    """(config, tokenizer, params to start from ({"backbone": ...}, a whole classifier's, or None),
    meta of the source) for a new or resumed run."""
    from tinylm.models.embbert import get_config
    if resume:
        meta_path = out / "run.json"
        if not (out / "ckpt.msgpack").is_file() or not meta_path.is_file():
            raise FinetuneError(f"{out}: nothing to resume (no ckpt.msgpack / run.json)")
        old = json.loads(meta_path.read_text())
        # a key the writing version did not have yet had its default there
        diff = [k for k in _RESUME_KEYS
                if old.get("finetune", {}).get(k, getattr(FinetuneConfig, k)) != getattr(cfg, k)]
        if diff:
            raise FinetuneError(f"{out}: the checkpoint was trained with other settings ("
                                + ", ".join(f"{k} {old['finetune'].get(k)} != {getattr(cfg, k)}" for k in diff) + ")")
        return old["config"], load_tokenizer(out / "tokenizer.json"), None, old
    if init_from is not None:           # a trained float run (its config, tokenizer and weights)
        from tinylm.train.floatrun import FloatRun
        run = FloatRun(init_from)
        if run.arch != "embbert":
            raise FinetuneError(f"{init_from}: arch {run.arch!r}, finetune starts from embbert runs only")
        return dict(run.config, **(overrides or {})), run.tokenizer, run.params, dict(source=str(init_from))
    if pre is None:                     # from scratch: a fresh init of the config
        from tinylm.train.pretrain import _default_tokenizer
        config = get_config(model or "embbert")
        tok = load_tokenizer(tokenizer or _default_tokenizer(config["vocab_size"]))
        # a fresh model takes its token table from the tokenizer it is given: a per-task tokenizer
        # (`tinylm tokenizer --task-text`) of fewer tokens makes the table, and the flash, smaller
        config = dict(config, vocab_size=tok.get_vocab_size())
        return dict(config, **(overrides or {})), tok, None, dict(source=None)
    config, tok, backbone, pre_meta = load_pretrained(pre)
    return dict(config, **(overrides or {})), tok, {"backbone": backbone}, dict(source=str(pre), tokens=pre_meta.get("tokens"))


def _merge(fresh, start):
    """`fresh` with every leaf that `start` has at the same path and shape taken from `start`
    (a float run starts a binary model: its alpha and beta stay fresh)."""
    if isinstance(fresh, dict):
        return {k: _merge(v, start[k]) if isinstance(start, dict) and k in start else v for k, v in fresh.items()}
    if getattr(start, "shape", None) != getattr(fresh, "shape", None):
        raise FinetuneError(f"cannot start from a parameter of shape {getattr(start, 'shape', None)}, "
                            f"the model has {fresh.shape}")
    return start


def finetune(pre: str | Path | None, task_name: str, out: str | Path,
             cfg: FinetuneConfig = FinetuneConfig(), data_dir=None,
             on_log: Callable[[dict], None] | None = None, train_examples=None, val_examples=None,
             resume: bool = False, model: str | dict | None = None,
             tokenizer: str | Path | None = None, init_from: str | Path | None = None,
             overrides: dict | None = None, teacher: str | Path | None = None) -> dict:
    """Finetunes into `out`. pre=None trains `model` (a config name or dict, default "embbert")
    from scratch with `tokenizer` (default models/tokenizer-<V>.json); `init_from` (a float run)
    starts from that run's weights, config and tokenizer. `overrides` change config keys (e.g.
    binary=True: the BiPFT-style model, whose alphas are then set from a training batch).
    `teacher` (a float run) is distilled from (cfg.kd_weight, cfg.hidden_weight). resume=True
    continues from out/ckpt.msgpack (pre, model and tokenizer are then taken from `out`)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import serialization
    from tinynlp_data import get_task, load_split
    from tinylm.models.embbert import check_same_shapes, classifier_from_config

    task = get_task(task_name)
    out = Path(out)
    config, tok, start, source = _start(pre, out, cfg, resume, model, tokenizer, init_from, overrides)
    if config.get("low_rank") and not (config.get("binary") and config.get("type") == "bert"):
        raise FinetuneError("low_rank (BiPFT-B's residual estimators) is for binary bert models: "
                            "EmbBERT's binary layers have no binary Q and K")
    if cfg.max_len > config["max_len"]:
        raise FinetuneError(f"max_len {cfg.max_len} exceeds the model's max_len {config['max_len']}")
    train = train_examples if train_examples is not None else load_split(task, "train", data_dir)
    val = val_examples if val_examples is not None else load_split(task, "validation", data_dir)
    if cfg.max_train is not None and len(train) > cfg.max_train:
        pick = np.random.default_rng(cfg.seed).permutation(len(train))[:cfg.max_train]
        train = [train[i] for i in sorted(pick)]
    t0 = time.time()
    input_len = cfg.max_len
    if cfg.window_stride:
        from tinylm.graph.windows import WindowError, check
        if task.type == "pair":
            raise FinetuneError(f"{task.name} is a sentence-pair task: windows are for single long texts")
        try:
            check(cfg.max_len, cfg.window_stride, cfg.max_input or 0)
        except WindowError as e:
            raise FinetuneError(str(e)) from None
        input_len = cfg.max_input
    tr_ids, va_ids = encode_examples(tok, train, input_len), encode_examples(tok, val, input_len)
    regression = task.problem == "regression"
    tr_y = np.asarray([e.label for e in train], np.float32 if regression else np.int32)
    va_y = [e.label for e in val]
    n_out = task.num_labels

    net = classifier_from_config(config, n_out)
    key = jax.random.PRNGKey(cfg.seed)
    params = dict(net.init(key, np.zeros((1, 16), np.int32))["params"])
    if start is not None:
        params = jax.tree_util.tree_map(jnp.asarray, _merge(params, start))
    if config.get("binary") and not resume:
        from tinylm.graph import windows
        from tinylm.models.binary import init_alphas
        first = [windows.windows(w, cfg.max_len, cfg.window_stride)[0] for w in tr_ids[:256]] \
            if cfg.window_stride else tr_ids[:256]
        x = next(_batches(first, np.arange(len(first)), 256, cfg.max_len))[1]
        params = init_alphas(lambda p, x: net.apply({"params": p}, x, mutable=["intermediates"]), params, x)
    distill, targets = teacher_loss(teacher, config, cfg, task, train, out, resume)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
        optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, max(1, cfg.warmup)),
                              optax.constant_schedule(cfg.lr)], [max(1, cfg.warmup)]),
        weight_decay=cfg.weight_decay))
    opt_state = tx.init(params)
    # the training state; history and the current epoch's losses travel as JSON text
    st = dict(params=params, opt_state=opt_state, best_params=params, ema=params, step=0, epoch=0, pos=0,
              best=-np.inf, best_epoch=0, bad_epochs=0, wall_s=0.0, history="[]", losses="[]",
              task=task.name)
    if resume:
        path = out / "ckpt.msgpack"
        raw = serialization.msgpack_restore(path.read_bytes())
        raw.setdefault("ema", raw.get("params"))     # a run without --ema (or from before it)
        check_same_shapes(params, raw["params"], str(path))
        st = serialization.from_state_dict(st, raw)
        if str(raw.get("task")) != task.name:
            raise FinetuneError(f"{path}: a checkpoint of task {raw.get('task')!r}, not {task.name!r}")
        meta = json.loads((out / "run.json").read_text())
    else:
        out.mkdir(parents=True, exist_ok=True)
        for f in ("ckpt.msgpack", "log.jsonl", "params.msgpack"):   # a new run never mixes with an old one
            (out / f).unlink(missing_ok=True)
        (out / "tokenizer.json").write_text(tok.to_str())
        meta = dict(arch="embbert", config=config, task=task.name, label_names=list(task.label_names),
                    max_len=cfg.max_len, metric=task.metric, n_train=len(train), n_val=len(val),
                    pretrained_from=source.get("source"), pretrain_tokens=source.get("tokens"),
                    teacher=str(teacher) if teacher is not None else None)
    params, opt_state, best_params, ema = st["params"], st["opt_state"], st["best_params"], st["ema"]
    step, epoch, pos = int(st["step"]), int(st["epoch"]), int(st["pos"])
    best, best_epoch, bad = float(st["best"]), int(st["best_epoch"]), int(st["bad_epochs"])
    history, losses = json.loads(str(st["history"])), json.loads(str(st["losses"]))
    wall_before = float(st["wall_s"])

    def loss_fn(p, x, y, w, t, k):
        logits, state = net.apply({"params": p}, x, deterministic=False, rngs={"dropout": k},
                                  capture_intermediates=layer_outputs, mutable=["intermediates"])
        if regression:
            per = (logits[:, 0] - y) ** 2
        else:
            per = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        if distill is not None:
            per = per + distill(x, logits, state["intermediates"], t)
        return (per * w).sum() / jnp.maximum(w.sum(), 1.0)

    @jax.jit
    def train_step(p, s, e, x, y, w, t, k, n):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y, w, t, k)
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
        if cfg.ema:
            d = jnp.minimum(cfg.ema, (1.0 + n) / (10.0 + n))
            e = jax.tree_util.tree_map(lambda a, b: d * a + (1.0 - d) * b, e, p)
        return p, s, (e if cfg.ema else p), loss

    apply_fn = jax.jit(lambda p, x: net.apply({"params": p}, x, deterministic=True))
    steps_per_epoch = -(-len(tr_ids) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    logf = open(out / "log.jsonl", "a")

    def log(rec: dict, info: str, epoch_end: bool = False):
        rec = dict(rec, elapsed_s=round(wall_before + time.time() - t0, 1))
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        if on_log:
            on_log(dict(total=total, done=step, epoch_end=epoch_end, info=info, record=rec))

    def finish(complete: bool, reason: str) -> dict:
        wall = round(wall_before + time.time() - t0, 1)
        meta.update(validation_score=float(best), best_epoch=best_epoch, history=history,
                    finetune=asdict(cfg), wall_s=wall, epochs_run=epoch, steps=step,
                    complete=complete, stop_reason=reason,
                    stopped_early=reason == "max_minutes")   # the wall cap cut an epoch short
        _atomic_write(out / "run.json", json.dumps(meta, indent=1).encode())
        return dict(task=task.name, metric=task.metric, score=float(best), best_epoch=best_epoch,
                    max_len=cfg.max_len, wall_s=wall, n_train=len(train), n_val=len(val),
                    epochs_run=epoch, complete=complete, stop_reason=reason,
                    stopped_early=reason == "max_minutes")

    def checkpoint():
        state = dict(params=params, opt_state=opt_state, best_params=best_params, ema=ema, step=step,
                     epoch=epoch, pos=pos, best=best, best_epoch=best_epoch, bad_epochs=bad,
                     wall_s=wall_before + time.time() - t0, history=json.dumps(history),
                     losses=json.dumps(losses), task=task.name)
        if not cfg.ema:
            del state["ema"]    # it equals params then; resume restores it from them (+1.4 MB saved)
        _atomic_write(out / "ckpt.msgpack", serialization.to_bytes(state))

    reason = "epochs"
    try:
        while epoch < cfg.epochs:
            if cfg.patience is not None and bad >= cfg.patience:
                reason = "patience"
                break
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(tr_ids))
            ep_t0, ep_tok, cut = time.time(), 0, False
            ep_ids = (random_windows(tr_ids, cfg.max_len, cfg.window_stride, np.random.default_rng([cfg.seed, epoch, 1]))
                      if cfg.window_stride else tr_ids)
            batches = _batches(ep_ids, order, cfg.batch_size, cfg.max_len)
            for i, (idx, x) in enumerate(batches):
                if i < pos:                                   # resumed inside this epoch
                    continue
                y = np.zeros((cfg.batch_size,), tr_y.dtype)
                y[:len(idx)] = tr_y[idx]
                w = np.zeros((cfg.batch_size,), np.float32)
                w[:len(idx)] = 1.0
                t = np.zeros((cfg.batch_size, targets.shape[1]), np.float32)
                t[:len(idx)] = targets[idx]
                params, opt_state, ema, loss = train_step(params, opt_state, ema, x, y, w, t,
                                                          jax.random.fold_in(key, step), np.float32(step))
                step, pos = step + 1, pos + 1
                ep_tok += int((x != 0).sum())
                if step % cfg.log_every == 0:
                    losses.append(float(loss))
                    tps = ep_tok / max(time.time() - ep_t0, 1e-9)
                    log(dict(event="step", epoch=epoch + 1, step=step, loss=round(losses[-1], 4),
                             tokens_per_s=round(tps)),
                        f"epoch {epoch + 1} step {step} loss {losses[-1]:.3f} {tps:.0f} tok/s")
                if cfg.time_budget is not None and time.time() - t0 > 60 * cfg.time_budget:
                    checkpoint()
                    log(dict(event="stop", reason="time_budget", epoch=epoch + 1, step=step),
                        f"time budget reached at epoch {epoch + 1} step {step}: checkpoint written")
                    return finish(False, "time_budget")
                if cfg.max_minutes is not None and time.time() - t0 > 60 * cfg.max_minutes:
                    cut = True
                    break
            s = score(task, predict_windowed(apply_fn, ema, va_ids, cfg.max_len, cfg.window_stride, n_out), va_y)
            epoch, pos = epoch + 1, 0
            history.append(dict(epoch=epoch, train_loss=float(np.mean(losses)) if losses else None,
                                val=s, elapsed_s=round(wall_before + time.time() - t0, 1)))
            losses = []
            if s > best:
                best, best_params, best_epoch, bad = s, jax.device_get(ema), epoch, 0
                _atomic_write(out / "params.msgpack", serialization.to_bytes(best_params))
            else:
                bad += 1
            checkpoint()
            finish(False, "running")                          # run.json current after every epoch
            log(dict(event="epoch", epoch=epoch, step=step, val=s, best=best, best_epoch=best_epoch),
                f"epoch {epoch}: validation {task.metric} {s:.4f} (best {best:.4f}, epoch {best_epoch})",
                epoch_end=True)
            if cut:
                reason = "max_minutes"
                break
        else:
            if cfg.patience is not None and bad >= cfg.patience:
                reason = "patience"
        log(dict(event="stop", reason=reason, epoch=epoch, step=step, best=best, best_epoch=best_epoch),
            f"stopped ({reason}) after epoch {epoch}: best validation {task.metric} {best:.4f} "
            f"(epoch {best_epoch})")
        return finish(True, reason)
    except KeyboardInterrupt:
        # the last epoch-end checkpoint stays valid; the log says where to resume from
        log(dict(event="stop", reason="interrupted", epoch=epoch + 1, step=step),
            f"interrupted: resume from the checkpoint of epoch {epoch}")
        raise
    finally:
        logf.close()

