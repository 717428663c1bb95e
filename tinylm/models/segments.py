"""Segment ids of a packed input `[CLS] A [SEP] B [SEP]`, shared by EmbBERT and the bert config."""
from __future__ import annotations

import jax.numpy as jnp

from tinylm.tokenizer import PAD, SEP


def segments_from_ids(ids: jnp.ndarray) -> jnp.ndarray:
    """[B, T] ids -> segment ids: 0 padding, 1 up to and including the first [SEP], 2 after."""
    is_sep = (ids == SEP).astype(jnp.int32)
    seps_before = jnp.cumsum(is_sep, axis=-1) - is_sep
    seg = jnp.where(seps_before > 0, 2, 1)
    return jnp.where(ids == PAD, 0, seg)
