"""Masked-LM (+ optional next-sentence prediction) pretraining of EmbBERT on a text corpus.

- Masking: 15% of the non-special tokens of each sequence are predicted; of those 80% become
  [MASK], 10% a random token, 10% stay as they are.
- NSP (optional, on by default as in the authors' recipe): `[CLS] A [SEP] B [SEP]`, B is the
  continuation of A half of the time and a random span otherwise; head Linear(d, 2) on
  position 0; the two losses are summed.
- Every batch is a pure function of (seed, step), and the dropout key is fold_in(seed, step),
  so resuming from a checkpoint reproduces the uninterrupted run exactly.
- Output directory: run.json, tokenizer.json, ckpt.msgpack (params + optimizer state + step,
  written atomically), backbone.msgpack (backbone parameters only, what finetuning reads),
  log.jsonl (one line per logging interval). Ctrl-C saves a checkpoint at the current step.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tinylm.tokenizer import CLS, MASK, PAD, SEP, corpus_lines, load_tokenizer, task_texts  # noqa: F401 (task_texts: re-exported)

N_SPECIAL = 5


@dataclass
class PretrainConfig:
    model: str | dict = "embbert"
    seq_len: int = 128
    batch_size: int = 32
    steps: int = 10_000
    lr: float = 5e-4
    warmup: int = 200
    weight_decay: float = 0.05
    mask_prob: float = 0.15
    nsp: bool = True
    seed: int = 0
    ckpt_every: int = 200
    log_every: int = 20
    max_minutes: float | None = None   # stop (and checkpoint) after this much wall time


class PretrainError(ValueError):
    pass


# ---------------------------------------------------------------- data

def encode_corpus(tok, paths, cache: Path | None = None, max_lines: int | None = None,
                  lines: list[str] | None = None) -> np.ndarray:
    """All corpus lines (of the files in `paths`, or `lines` themselves) encoded and concatenated
    into one id stream (uint16), cached as .npy."""
    if cache is not None and cache.is_file():
        return np.load(cache)
    source = lines if lines is not None else corpus_lines(paths)
    lines = []
    for i, line in enumerate(source):
        if max_lines is not None and i >= max_lines:
            break
        lines.append(line.strip())
    chunks = []
    for i in range(0, len(lines), 4096):
        for enc in tok.encode_batch(lines[i:i + 4096], add_special_tokens=False):
            chunks.append(np.asarray(enc.ids, np.uint16))
    if not chunks:
        raise PretrainError(f"no text found in {', '.join(map(str, paths or ['the task texts']))}")
    stream = np.concatenate(chunks)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, stream)
    return stream


def make_batch(stream: np.ndarray, seed: int, step: int, batch_size: int, seq_len: int,
               vocab_size: int, mask_prob: float = 0.15, nsp: bool = True) -> dict:
    """Batch number `step`: a pure function of its arguments."""
    rng = np.random.default_rng([seed, step])
    B, T = batch_size, seq_len
    n = len(stream)
    ids = np.zeros((B, T), np.int32)
    nsp_labels = np.zeros((B,), np.int32)
    for b in range(B):
        if nsp:
            budget = T - 3
            la = int(rng.integers(max(1, budget // 4), budget - max(1, budget // 4) + 1))
            lb = budget - la
            sa = int(rng.integers(0, n - budget))
            a = stream[sa:sa + la]
            if rng.random() < 0.5:
                bb, nsp_labels[b] = stream[sa + la:sa + la + lb], 1      # is next
            else:
                sb = int(rng.integers(0, n - lb))
                bb, nsp_labels[b] = stream[sb:sb + lb], 0
            seq = np.concatenate([[CLS], a, [SEP], bb, [SEP]])
        else:
            s = int(rng.integers(0, n - (T - 2)))
            seq = np.concatenate([[CLS], stream[s:s + T - 2], [SEP]])
        ids[b, :len(seq)] = seq
    P = max(1, int(round(mask_prob * T)))
    candidate = ids >= N_SPECIAL
    score = np.where(candidate, rng.random((B, T)), np.inf)
    positions = np.argsort(score, axis=1, kind="stable")[:, :P].astype(np.int32)
    weights = np.take_along_axis(candidate, positions, 1).astype(np.float32)
    labels = np.take_along_axis(ids, positions, 1)
    inputs = ids.copy()
    r = rng.random((B, P))
    random_tok = rng.integers(N_SPECIAL, vocab_size, (B, P)).astype(np.int32)
    new = np.where(r < 0.8, MASK, np.where(r < 0.9, random_tok, labels))
    new = np.where(weights > 0, new, labels)
    np.put_along_axis(inputs, positions, new, 1)
    return dict(ids=inputs, positions=positions, labels=labels, weights=weights, nsp=nsp_labels)


# ---------------------------------------------------------------- training

def _optimizer(cfg: PretrainConfig):
    import optax
    sched = optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, max(1, cfg.warmup)),
                                  optax.constant_schedule(cfg.lr)], [max(1, cfg.warmup)])
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(sched, weight_decay=cfg.weight_decay))


def make_train_step(model, tx, use_nsp: bool):
    import jax
    import jax.numpy as jnp
    import optax

    def loss_fn(params, batch, key):
        mlm, nsp = model.apply({"params": params}, batch["ids"], batch["positions"],
                               deterministic=False, rngs={"dropout": key})
        ce = optax.softmax_cross_entropy_with_integer_labels(mlm, batch["labels"])
        w = batch["weights"]
        mlm_loss = (ce * w).sum() / jnp.maximum(w.sum(), 1.0)
        acc = ((mlm.argmax(-1) == batch["labels"]) * w).sum() / jnp.maximum(w.sum(), 1.0)
        nsp_loss = optax.softmax_cross_entropy_with_integer_labels(nsp, batch["nsp"]).mean()
        loss = mlm_loss + (nsp_loss if use_nsp else 0.0)
        aux = dict(loss=loss, mlm_loss=mlm_loss, mlm_acc=acc)
        if use_nsp:                      # without NSP its head is untrained: no figure to log
            aux["nsp_loss"] = nsp_loss
        return loss, aux

    @jax.jit
    def step(params, opt_state, batch, key):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return step


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_checkpoint(out: Path, params, opt_state, step: int, tokens: int) -> None:
    from flax import serialization
    state = {"params": params, "opt_state": opt_state, "step": step, "tokens": tokens}
    _atomic_write(out / "ckpt.msgpack", serialization.to_bytes(state))
    _atomic_write(out / "backbone.msgpack", serialization.to_bytes(params["backbone"]))


def load_checkpoint(out: Path, params, opt_state):
    from flax import serialization
    from tinylm.models.embbert import check_same_shapes
    path = out / "ckpt.msgpack"
    try:
        raw = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:
        raise PretrainError(f"{path}: cannot read checkpoint ({e})") from None
    check_same_shapes(params, raw["params"], str(path))
    template = {"params": params, "opt_state": opt_state, "step": 0, "tokens": 0}
    state = serialization.from_state_dict(template, raw)
    return state["params"], state["opt_state"], int(state["step"]), int(state["tokens"])


def pretrain(out: str | Path, cfg: PretrainConfig, corpus=None, tokenizer: str | Path | None = None,
             resume: bool = False, on_log: Callable[[dict], None] | None = None,
             max_lines: int | None = None, stream: np.ndarray | None = None,
             texts: list[str] | None = None) -> dict:
    """Runs (or resumes) pretraining into `out`. Returns the last log record."""
    import jax
    from tinylm.models.embbert import PretrainModel, get_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = get_config(cfg.model)
    if cfg.seq_len > model_cfg["max_len"]:
        raise PretrainError(f"seq_len {cfg.seq_len} exceeds the model's max_len {model_cfg['max_len']}")
    meta_path = out / "run.json"
    if resume:
        if not (out / "ckpt.msgpack").is_file() or not meta_path.is_file():
            raise PretrainError(f"{out}: nothing to resume (no ckpt.msgpack / run.json)")
        old = json.loads(meta_path.read_text())
        if _arch(old.get("config")) != _arch(model_cfg):
            raise PretrainError(f"{out}/run.json: the checkpoint is of another config "
                                f"({old.get('config')}), not {model_cfg}")
        model_cfg = old["config"]       # e.g. a run begun before `init` existed keeps its config
        tok_path = out / "tokenizer.json"
    else:
        tok_path = Path(tokenizer) if tokenizer else _default_tokenizer(model_cfg["vocab_size"])
    tok = load_tokenizer(tok_path)
    if tok.get_vocab_size() != model_cfg["vocab_size"]:
        raise PretrainError(f"{tok_path}: vocabulary of {tok.get_vocab_size()} tokens, the model "
                            f"config expects {model_cfg['vocab_size']} (train one with `tinylm tokenizer`)")
    if not resume:
        (out / "tokenizer.json").write_text(tok.to_str())
    if stream is None and texts is not None:
        stream = encode_corpus(tok, None, out / f"corpus-ids-{model_cfg['vocab_size']}.npy", max_lines, texts)
    if stream is None:
        if corpus is None:
            from tinynlp_data import find_data_dir
            corpus = [find_data_dir() / "corpus"]
        stream = encode_corpus(tok, corpus, out / f"corpus-ids-{model_cfg['vocab_size']}.npy", max_lines)

    model = PretrainModel(model_cfg)
    tx = _optimizer(cfg)
    key = jax.random.PRNGKey(cfg.seed)
    P = max(1, int(round(cfg.mask_prob * cfg.seq_len)))
    params = model.init(key, np.zeros((1, cfg.seq_len), np.int32), np.zeros((1, P), np.int32))["params"]
    opt_state = tx.init(params)
    step, tokens = 0, 0
    if resume:
        params, opt_state, step, tokens = load_checkpoint(out, params, opt_state)
    meta = dict(arch="embbert", kind="pretrain", config=model_cfg, max_len=cfg.seq_len,
                pretrain=asdict(cfg) | {"model": cfg.model if isinstance(cfg.model, str) else "custom"},
                corpus_tokens=int(len(stream)),
                corpus=("task texts" if texts is not None else [str(c) for c in corpus or []]))
    train_step = make_train_step(model, tx, cfg.nsp)
    t0 = time.time()
    wall_before = json.loads(meta_path.read_text()).get("wall_s", 0.0) if resume else 0.0
    tokens_at_start, last = tokens, {}
    window_t, window_tok = time.time(), 0

    def write_meta():
        meta.update(step=step, tokens=tokens, wall_s=round(wall_before + time.time() - t0, 1),
                    tokens_per_s=round((tokens - tokens_at_start) / max(time.time() - t0, 1e-9), 1))
        _atomic_write(meta_path, json.dumps(meta, indent=1).encode())

    try:
        with open(out / "log.jsonl", "a") as logf:
            while step < cfg.steps:
                batch = make_batch(stream, cfg.seed, step, cfg.batch_size, cfg.seq_len,
                                   model_cfg["vocab_size"], cfg.mask_prob, cfg.nsp)
                params, opt_state, m = train_step(params, opt_state, batch,
                                                  jax.random.fold_in(key, step))
                step += 1
                n_tok = int((batch["ids"] != PAD).sum())
                tokens += n_tok
                window_tok += n_tok
                if step % cfg.log_every == 0 or step == cfg.steps:
                    m = {k: float(v) for k, v in m.items()}
                    now = time.time()
                    last = dict(step=step, tokens=tokens, elapsed_s=round(now - t0, 1),
                                tokens_per_s=round(window_tok / max(now - window_t, 1e-9), 1), **m)
                    window_t, window_tok = now, 0
                    logf.write(json.dumps(last) + "\n")
                    logf.flush()
                    if on_log:
                        on_log(last)
                if step % cfg.ckpt_every == 0:
                    save_checkpoint(out, params, opt_state, step, tokens)
                    write_meta()
                if cfg.max_minutes is not None and time.time() - t0 > 60 * cfg.max_minutes:
                    break
    except KeyboardInterrupt:
        save_checkpoint(out, params, opt_state, step, tokens)
        write_meta()
        raise
    save_checkpoint(out, params, opt_state, step, tokens)
    write_meta()
    return last | {"step": step, "tokens": tokens}


def _arch(config) -> dict | None:
    """The config without the keys that only choose initial values or how an op is computed:
    a checkpoint resumes under either."""
    return None if config is None else {k: v for k, v in config.items() if k not in ("init", "conv_impl")}


def _default_tokenizer(vocab_size: int) -> Path:
    root = Path(__file__).resolve().parents[2] / "models"
    p = root / f"tokenizer-{vocab_size}.json"
    if not p.is_file():
        raise PretrainError(f"no tokenizer given and {p} does not exist; "
                            f"train one: tinylm tokenizer --vocab {vocab_size} --out {p}")
    return p
