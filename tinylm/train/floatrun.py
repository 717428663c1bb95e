"""A trained float model on disk (a "run directory") and how to run it on the host.

Run directory contract, shared by every architecture:
  run.json        {"arch": "tiny" | "embbert", "config": {...}, "task": str, "label_names": [...],
                   "max_len": int, ...}  (anything else is informational)
  tokenizer.json  the HF tokenizers file the model was trained with
  params.msgpack  flax.serialization.to_bytes of the parameter pytree

Each arch module provides `classifier_from_config(config: dict, num_labels: int) -> flax Module`
whose `__call__(ids [B, T] int32, deterministic=True)` returns logits [B, C], treating id 0
([PAD]) as padding. This module imports JAX lazily: codegen and the harness never need it.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from tinylm.tokenizer import load_tokenizer

ARCHS = {"tiny": "tinylm.models.tiny", "embbert": "tinylm.models.embbert"}


class RunError(ValueError):
    pass


def is_run_dir(path) -> bool:
    return (Path(path) / "run.json").is_file()


class FloatRun:
    def __init__(self, path):
        self.path = Path(path)
        try:
            self.meta = json.loads((self.path / "run.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunError(f"{self.path}: not a run directory ({e})") from None
        arch = self.meta.get("arch")
        if arch not in ARCHS:
            raise RunError(f"{self.path}/run.json: unknown arch {arch!r}; known: {', '.join(ARCHS)}")
        self.arch = arch
        self.config = self.meta["config"]
        self.task = self.meta.get("task")
        self.label_names = self.meta.get("label_names", [])
        self.max_len = int(self.meta["max_len"])
        self.tokenizer = load_tokenizer(self.path / "tokenizer.json")
        self._module = None
        self._params = None

    def _load(self):
        import jax
        from flax import serialization
        mod = importlib.import_module(ARCHS[self.arch])
        self.module = mod.classifier_from_config(self.config, max(1, len(self.label_names)))
        template = self.module.init(jax.random.PRNGKey(0), np.zeros((1, self.max_len), np.int32))["params"]
        where = self.path / "params.msgpack"
        try:
            raw = serialization.msgpack_restore(where.read_bytes())
        except Exception as e:
            raise RunError(f"{where}: not a msgpack checkpoint ({e})") from None
        _check_shapes(template, raw, where)    # from_bytes alone does not compare shapes
        self._params = serialization.from_state_dict(template, raw)
        self._apply = jax.jit(lambda p, x: self.module.apply({"params": p}, x, deterministic=True))

    @property
    def params(self):
        if self._params is None:
            self._load()
        return self._params

    def predict(self, batch_ids: list[list[int]], batch_size: int = 64) -> np.ndarray:
        """Float logits [N, C] for token-id lists (each <= max_len), padded with [PAD]."""
        self.params
        out = []
        for i in range(0, len(batch_ids), batch_size):
            chunk = batch_ids[i:i + batch_size]
            x = np.zeros((batch_size, self.max_len), np.int32)   # fixed shape: one jit compile
            for j, ids in enumerate(chunk):
                x[j, :len(ids)] = ids
            out.append(np.asarray(self._apply(self._params, x))[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, len(self.label_names)))


def _check_shapes(template, raw, where) -> None:
    """RunError naming the first parameter whose name or shape differs: a checkpoint of another config."""
    from flax.traverse_util import flatten_dict
    want = {k: tuple(np.shape(v)) for k, v in flatten_dict(template, sep="/").items()}
    got = {k: tuple(np.shape(v)) for k, v in flatten_dict(raw, sep="/").items()}
    if set(want) != set(got):
        diff = ", ".join(sorted(set(want) ^ set(got))[:3])
        raise RunError(f"{where}: parameters differ from the config in run.json ({diff} ...): "
                       "a checkpoint of another config?")
    for k, shape in want.items():
        if got[k] != shape:
            raise RunError(f"{where}: parameter {k} has shape {got[k]}, the config in run.json expects {shape}: "
                           "a checkpoint of another config?")
