"""Distillation from a float teacher run (BiPFT's recipe for binary students, MiniLM's for small
ones): the per-example loss terms finetune adds to cross-entropy.

    kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))        soft logits
    hidden_weight * mean over layers of |h_s - h_t|^2 / mean |h_t|^2 (real tokens)   hidden states

The teacher is a float run, or "tfidf": the bag-of-words baseline (tinylm/train/baseline.py),
whose out-of-fold log-probabilities on the training split are fixed soft targets (soft logits
only: it has no hidden states).

Hidden states are the outputs of every EmbBERT (or bert) layer, captured with flax's capture_intermediates
(so the model code needs no hooks); they need a teacher of the same depth and width.
"""
from __future__ import annotations

from pathlib import Path


class DistillError(ValueError):
    pass


def layer_outputs(mdl, method_name) -> bool:
    """capture_intermediates filter: the output of every layer (the hidden states)."""
    from tinylm.models.bert import BertLayer
    from tinylm.models.embbert import EmbBERTLayer
    return method_name == "__call__" and isinstance(mdl, (EmbBERTLayer, BertLayer))


def _hidden(inter) -> list:
    """The captured layer outputs, in layer order."""
    bb = inter["backbone"]
    return [bb[k]["__call__"][0] for k in sorted((k for k in bb if k.startswith("layer_")), key=lambda k: int(k[6:]))]


def soft_kl(teacher_logits, logits, T: float):
    """T^2 KL(softmax(teacher / T) || softmax(student / T)) per example."""
    import jax
    pt = jax.nn.softmax(teacher_logits / T, -1)
    return T * T * (pt * (jax.nn.log_softmax(teacher_logits / T, -1) - jax.nn.log_softmax(logits / T, -1))).sum(-1)


BAG_OF_WORDS = "tfidf"


def is_bag_of_words(teacher) -> bool:
    return teacher is not None and str(teacher) == BAG_OF_WORDS and not Path(str(teacher)).is_dir()


def bag_of_words_targets(task, train, cache: Path | None = None):
    """The "tfidf" teacher's soft targets: out-of-fold TF-IDF + LR log-probabilities per training
    example, cached in `cache` (.npy) so a resumed run reuses exactly the same ones."""
    import numpy as np
    from tinylm.extras import MissingExtra
    from tinylm.train.baseline import out_of_fold_log_proba
    if cache is not None and cache.is_file():
        t = np.load(cache)
        if t.shape == (len(train), task.num_labels):
            return t
    try:
        t = out_of_fold_log_proba(task, train)
    except (ValueError, MissingExtra) as e:
        raise DistillError(f"--teacher {BAG_OF_WORDS}: {e}") from None
    if cache is not None:
        np.save(cache, t)
    return t


def targets_distiller(cfg):
    """The loss of a fixed-target teacher (the bag of words): soft logits only."""
    def loss(x, logits, inter, targets):
        return cfg.kd_weight * soft_kl(targets, logits, float(cfg.temperature))
    return loss


def distiller(teacher, config, cfg, n_out: int):
    """f(x, student logits, student intermediates) -> per-example distillation loss [B]; cfg is
    a FinetuneConfig (kd_weight, hidden_weight, temperature)."""
    import jax
    import jax.numpy as jnp
    from tinylm.train.floatrun import FloatRun
    t = FloatRun(teacher)
    if t.arch != "embbert":
        raise DistillError(f"{teacher}: the teacher must be an EmbBERT run (arch {t.arch!r})")
    if cfg.hidden_weight and (t.config.get("layers"), t.config.get("d")) != (config.get("layers"), config.get("d")):
        raise DistillError(f"{teacher}: hidden-state distillation needs a teacher of the same depth and width "
                           "(or --hidden-weight 0: soft logits only)")
    if len(t.label_names) != n_out:
        raise DistillError(f"{teacher}: the teacher has {len(t.label_names)} outputs, the task {n_out}")
    t_params, t_mod, T = jax.tree_util.tree_map(jnp.asarray, t.params), t.module, float(cfg.temperature)

    def loss(x, logits, inter, targets=None):          # targets: unused (the teacher computes its own)
        tl, ts = t_mod.apply({"params": t_params}, x, deterministic=True,
                             capture_intermediates=layer_outputs, mutable=["intermediates"])
        tl = jax.lax.stop_gradient(tl)
        per = jnp.zeros(x.shape[0])
        if cfg.kd_weight:
            per = per + cfg.kd_weight * soft_kl(tl, logits, T)
        if cfg.hidden_weight:
            real = (x != 0)[..., None].astype(jnp.float32)
            n = jnp.maximum(real.sum(axis=(1, 2)), 1.0)
            terms = []
            for hs, ht in zip(_hidden(inter), _hidden(ts["intermediates"])):
                ht = jax.lax.stop_gradient(ht)
                scale = jnp.maximum((ht * ht * real).sum(axis=(1, 2)) / n, 1e-6)
                terms.append(((hs - ht) ** 2 * real).sum(axis=(1, 2)) / n / scale)
            per = per + cfg.hidden_weight * jnp.mean(jnp.stack(terms), 0)
        return per
    return loss


def teacher_loss(teacher, config, cfg, task, train, out: Path, resume: bool):
    """(per-example distillation loss or None, per-example targets [len(train), C or 1]) for
    finetune: the bag of words' fixed targets (cached in OUT/teacher-tfidf.npy, recomputed by a new
    run), a float run's loss (it computes its own targets: a dummy column), or no teacher."""
    import numpy as np
    if is_bag_of_words(teacher):
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            (out / "teacher-tfidf.npy").unlink(missing_ok=True)
        return targets_distiller(cfg), bag_of_words_targets(task, train, out / "teacher-tfidf.npy")
    none = np.zeros((len(train), 1), np.float32)
    return (distiller(teacher, config, cfg, task.num_labels) if teacher is not None else None), none
