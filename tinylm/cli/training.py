"""`tinylm` training commands: tokenizer, pretrain, finetune, baseline, bench (EmbBERT and the
bag-of-words bar) and train (the spine's small transformer). Float models need the `train` extra."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from tinylm.cli.common import console, fail, progress


def _fail(msg: str) -> None:
    fail(msg, 2)          # 2: as the training commands always exited on bad input


def _with_init(model: str, init: Optional[str]):
    """The config name, or its dict with `init` replaced (an ablation of issue 9's init)."""
    if init is None:
        return model
    from tinylm.models.embbert import INITS, get_config
    if init not in INITS:
        _fail(f"unknown init {init!r}; known: {', '.join(INITS)}")
    return dict(get_config(model), init=init)


def tokenizer_cmd(
    corpus: List[Path] = typer.Option(None, help="Corpus files or directories (*.txt, *.txt.gz); "
                                      "default: <data dir>/corpus"),
    vocab: int = typer.Option(8192, help="Vocabulary size (specials [PAD] [UNK] [CLS] [MASK] [SEP] = 0..4)."),
    out: Path = typer.Option(..., help="Where to write the tokenizer JSON."),
    task_text: List[str] = typer.Option(None, help="Train on the training texts of this task instead of "
                                        "a corpus (a per-task tokenizer, as the EmbBERT authors' "
                                        "from-scratch models; repeat for several)."),
    data_dir: Optional[Path] = typer.Option(None, help="Data directory (else $TINYLM_DATA, ../shared/data)."),
):
    """Train the BPE tokenizer (lower-cased, accents stripped, whitespace pre-tokenizer).

    A model trained with it (`finetune --from-scratch --tokenizer OUT`) carries it in its run
    directory and its ONNX graph, so build and eval need nothing more."""
    from tinylm.tokenizer import corpus_lines, task_texts, train_tokenizer
    from tinynlp_data import DataError, find_data_dir
    if task_text and corpus:
        _fail("give --corpus or --task-text, not both")
    try:
        lines = (task_texts(task_text, data_dir) if task_text
                 else corpus_lines(corpus or [find_data_dir(data_dir) / "corpus"]))
    except (DataError, KeyError) as e:
        _fail(str(e).strip('"'))
    t0 = time.time()
    tok = train_tokenizer(lines, vocab)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    typer.echo(f"{out}: {tok.get_vocab_size()} tokens in {time.time() - t0:.1f} s")


def pretrain_cmd(
    model: str = typer.Option("embbert", help="Model config: embbert, embbert-tiny, embbert-nano, bert."),
    init: Optional[str] = typer.Option(None, help="Override the config's init: delta (the "
                                       "configs' default) or flax (the old one)."),
    out: Path = typer.Option(..., help="Run directory (checkpoint, tokenizer, log)."),
    steps: int = typer.Option(10_000, help="Total optimizer steps."),
    seq_len: int = typer.Option(128, help="Sequence length (<= the model's max_len 256)."),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(5e-4, help="AdamW peak learning rate (linear warm-up, then constant)."),
    warmup: int = typer.Option(200),
    weight_decay: float = typer.Option(0.05),
    nsp: bool = typer.Option(True, help="Add next-sentence prediction to masked-LM."),
    seed: int = typer.Option(0),
    minutes: Optional[float] = typer.Option(None, help="Stop (with a checkpoint) after this wall time."),
    ckpt_every: int = typer.Option(200, help="Checkpoint every N steps."),
    tokenizer: Optional[Path] = typer.Option(None, help="Tokenizer JSON (default models/tokenizer-<vocab>.json)."),
    corpus: List[Path] = typer.Option(None, help="Corpus files/dirs (default <data dir>/corpus)."),
    task_text: List[str] = typer.Option(None, help="Pretrain on the training texts of this task instead "
                                        "of a corpus (task-adaptive pretraining; repeat for several; "
                                        "labels unused). Usually with --no-nsp."),
    data_dir: Optional[Path] = typer.Option(None, help="Data directory (else $TINYLM_DATA, ../shared/data)."),
    resume: bool = typer.Option(False, help="Continue from OUT/ckpt.msgpack (exactly)."),
    json_out: bool = typer.Option(False, "--json", help="Print the final record as JSON."),
):
    """Masked-LM (+NSP) pretraining. Ctrl-C stops cleanly and keeps the last checkpoint."""
    from tinylm.train.pretrain import PretrainConfig, PretrainError, pretrain
    from tinylm.models.embbert import CheckpointMismatch
    from tinynlp_data import DataError, find_data_dir
    cfg = PretrainConfig(model=_with_init(model, init), seq_len=seq_len, batch_size=batch_size, steps=steps, lr=lr,
                         warmup=warmup, weight_decay=weight_decay, nsp=nsp, seed=seed,
                         ckpt_every=ckpt_every, max_minutes=minutes)
    try:
        if task_text and corpus:
            _fail("give --corpus or --task-text, not both")
        texts = None
        if task_text:
            from tinylm.tokenizer import task_texts
            texts, paths = task_texts(task_text, data_dir), None
        else:
            paths = corpus or [find_data_dir(data_dir) / "corpus"]
        with progress() as prog:
            task = prog.add_task("pretrain", total=steps, info="")

            def on_log(r):
                prog.update(task, completed=r["step"],
                            info=f"loss {r['loss']:.3f} mlm-acc {r['mlm_acc']:.3f} "
                                 f"{r['tokens_per_s']:.0f} tok/s")
                if not sys.stderr.isatty():
                    print(json.dumps(r), flush=True)
            last = pretrain(out, cfg, corpus=paths, tokenizer=tokenizer, resume=resume, on_log=on_log,
                            texts=texts)
    except (PretrainError, CheckpointMismatch, DataError, KeyError) as e:
        _fail(str(e).strip("'\""))
    except KeyboardInterrupt:
        typer.echo(f"interrupted: checkpoint kept in {out}/ckpt.msgpack (resume with --resume)", err=True)
        raise typer.Exit(130)
    typer.echo(json.dumps(last) if json_out else
               f"{out}: step {last['step']}, {last['tokens']:,} tokens")


def finetune_cmd(
    pre: Optional[Path] = typer.Argument(None, help="Pretraining run directory (or models/embbert-pre); "
                                         "omit with --from-scratch or --resume."),
    task: str = typer.Option(..., help="Task name (TinyNLP or GLUE)."),
    out: Path = typer.Option(..., help="Output run directory (run.json, tokenizer.json, params.msgpack, "
                             "ckpt.msgpack, log.jsonl)."),
    from_scratch: bool = typer.Option(False, help="No pretraining: a fresh init of --model."),
    model: str = typer.Option("embbert", help="Model config for --from-scratch."),
    init: Optional[str] = typer.Option(None, help="Override the config's init for --from-scratch: "
                                       "delta (the configs' default) or flax (the old one)."),
    tokenizer: Optional[Path] = typer.Option(None, help="Tokenizer for --from-scratch (default "
                                             "models/tokenizer-<vocab>.json); the model's token table "
                                             "takes its size (e.g. a per-task `tinylm tokenizer "
                                             "--task-text`)."),
    init_from: Optional[Path] = typer.Option(None, help="Start from this float run's weights, config "
                                             "and tokenizer (e.g. a binary model from its float one)."),
    binary: bool = typer.Option(False, help="BiPFT-style binary model: 1-bit Wq, Wo, Wc and their "
                                "inputs (docs/binary.md); usually with --init-from and --teacher."),
    binary_embedding: bool = typer.Option(False, help="Also binarize the token embedding (r bits a "
                                          "token, W_te binary): 1/4 of the int8 table's flash."),
    low_rank: bool = typer.Option(False, help="With --binary on the bert config: BiPFT-B's rank-1 "
                                  "estimators of the binarization residual (tinylm/models/bert.py)."),
    binary_attention: bool = typer.Option(False, help="EmbBERT with attention probabilities in {0, "
                                          "alpha_p} (elastic binarization; an ablation, not lowered "
                                          "to the integer graph). The binary bert config always has it."),
    teacher: Optional[Path] = typer.Option(None, help="Float run of the same architecture to distil "
                                           "from (soft logits and hidden states), or `tfidf`: the "
                                           "bag-of-words baseline's out-of-fold probabilities on the "
                                           "training split (soft logits only; needs tinylm[baseline])."),
    kd_weight: float = typer.Option(1.0, help="With --teacher: weight of the soft-logit KL term."),
    hidden_weight: float = typer.Option(1.0, help="With --teacher: weight of the hidden-state MSE term."),
    temperature: float = typer.Option(1.0, help="With --teacher: softmax temperature of the KL term."),
    epochs: int = typer.Option(30, help="Maximum number of epochs (early stopping usually ends sooner)."),
    patience: int = typer.Option(3, help="Stop after this many epochs without a better validation "
                                 "score (0: never)."),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(5e-4),
    weight_decay: float = typer.Option(0.05),
    max_len: int = typer.Option(128, help="Token budget per example, [CLS] and [SEP] included."),
    seed: int = typer.Option(0),
    max_train: Optional[int] = typer.Option(None, help="Use at most this many training examples."),
    minutes: Optional[float] = typer.Option(None, help="Wall-time cap: stop and finish with the best "
                                            "epoch so far (not resumable)."),
    time_budget: Optional[float] = typer.Option(None, help="Minutes: write a checkpoint and stop; "
                                                "continue later with --resume."),
    resume: bool = typer.Option(False, help="Continue OUT from its checkpoint (exactly)."),
    windows: Optional[int] = typer.Option(None, "--windows", metavar="STRIDE",
                                          help="Texts longer than --max-len (up to --max-input tokens) as "
                                          "windows STRIDE apart: each epoch trains on a random window of "
                                          "each, validation sums all windows' logits (as `tinylm build "
                                          "--windows` runs them)."),
    max_input: Optional[int] = typer.Option(None, "--max-input", help="With --windows: the longest input in tokens."),
    ema: float = typer.Option(0.0, "--ema", metavar="DECAY",
                              help="Validate and keep an exponential moving average of the weights "
                              "(e.g. 0.99: Polyak averaging, steadier than the last step's weights "
                              "on small tasks); 0: off."),
    log_every: int = typer.Option(50, help="A progress line every N steps (and one per epoch)."),
    data_dir: Optional[Path] = typer.Option(None, help="Data directory (else $TINYLM_DATA, ../shared/data)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Finetune EmbBERT on one task (pretrained or from scratch); early stopping on validation.

    Progress goes to OUT/log.jsonl and, when stderr is not a terminal, to stderr as lines."""
    from tinylm.train.distill import DistillError
    from tinylm.train.finetune import FinetuneConfig, FinetuneError, finetune
    from tinylm.models.embbert import CheckpointMismatch
    from tinylm.train.floatrun import RunError
    from tinynlp_data import DataError
    if pre is None and not (from_scratch or resume or init_from):
        _fail("give a pretraining run directory, --from-scratch, --init-from, or --resume")
    if pre is not None and from_scratch:
        _fail("--from-scratch takes no pretraining directory")
    if init_from is not None and (pre is not None or from_scratch):
        _fail("--init-from replaces the pretraining directory and --from-scratch: give one of them")
    from tinylm.train.distill import is_bag_of_words
    distil = teacher is not None
    if is_bag_of_words(teacher):
        hidden_weight = 0.0                      # a linear model has no hidden states to match
    cfg = FinetuneConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         max_len=max_len, seed=seed, max_train=max_train, max_minutes=minutes,
                         patience=patience or None, time_budget=time_budget, log_every=log_every,
                         kd_weight=kd_weight if distil else 0.0, hidden_weight=hidden_weight if distil else 0.0,
                         temperature=temperature, window_stride=windows, max_input=max_input, ema=ema)
    if not 0.0 <= ema < 1.0:
        _fail(f"--ema {ema}: a decay in [0, 1) (0: off)")
    if (windows is None) != (max_input is None):
        _fail("--windows and --max-input go together (a stride and the longest input)")
    try:
        with progress() as prog:
            bar = prog.add_task(task, total=None, info="")

            def on_log(r):
                prog.update(bar, total=r["total"], completed=r["done"], info=r["info"])
                if not sys.stderr.isatty():     # nohup / CI: one line per record instead of a bar
                    print(time.strftime("%H:%M:%S"), task, r["info"], file=sys.stderr, flush=True)
            res = finetune(None if from_scratch else pre, task, out, cfg, data_dir=data_dir,
                           on_log=on_log, resume=resume, model=_with_init(model, init),
                           tokenizer=tokenizer, init_from=init_from,
                           overrides=({"binary": True} if binary else {})
                           | ({"binary_embedding": True} if binary_embedding else {})
                           | ({"low_rank": True} if low_rank else {})
                           | ({"binary_attention": True} if binary_attention else {}) or None, teacher=teacher)
    except (FinetuneError, DistillError, CheckpointMismatch, RunError, DataError, KeyError) as e:
        _fail(str(e).strip("'\""))
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {out}/ckpt.msgpack holds the last finished epoch (--resume)", err=True)
        raise typer.Exit(130)
    state = "" if res["complete"] else ", unfinished: continue with --resume"
    typer.echo(json.dumps(res) if json_out else
               f"{out}: {task} validation {res['metric']} {res['score']:.4f} "
               f"(epoch {res['best_epoch']} of {res['epochs_run']}, stop: {res['stop_reason']}, "
               f"{res['wall_s']:.0f} s{state})")


def baseline_cmd(
    task: Optional[str] = typer.Option(None, help="Task, or comma-separated tasks (default: all of --suite)."),
    suite: str = typer.Option("tinynlp", help="tinynlp or glue."),
    data_dir: Optional[Path] = typer.Option(None, help="Data directory (else $TINYLM_DATA, ../shared/data)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON here."),
    hashed_ngrams: str = typer.Option("1,2", help="n-gram range of the hashed variant, e.g. 1,1."),
):
    """Bag-of-words baselines (TF-IDF and hashed-4096 + logistic regression), validation split."""
    from tinylm.extras import MissingExtra
    from tinylm.train.baseline import run_task, table
    from tinynlp_data import GLUE, TINYNLP, DataError, get_task
    try:
        names = {"tinynlp": TINYNLP, "glue": GLUE}.get(suite)
        if names is None:
            raise ValueError(f"unknown suite {suite!r}; known: tinynlp, glue")
        if task:
            names = task.split(",")
            for n in names:
                get_task(n)
        ng = tuple(int(v) for v in hashed_ngrams.split(","))
        if len(ng) != 2 or not 1 <= ng[0] <= ng[1]:
            raise ValueError(f"--hashed-ngrams {hashed_ngrams!r}: expected MIN,MAX, e.g. 1,2")
        rows = []
        for n in names:
            r = run_task(n, data_dir, hashed_ngrams=ng)
            typer.echo(f"[baseline] {n}: tfidf {r['tfidf']['score']:.4f} (C {r['tfidf']['C']:g}), "
                       f"hashed {r['hashed']['score']:.4f} (C {r['hashed']['C']:g}) in "
                       f"{r['tfidf']['wall_s'] + r['hashed']['wall_s']:.0f} s", err=True)
            rows.append(r)
    except MissingExtra as e:        # its message ends in a quote: keep it whole
        _fail(str(e))
    except (DataError, KeyError, ValueError) as e:
        _fail(str(e).strip("'\""))
    res = dict(rows=rows, table=table(rows))
    typer.echo(res["table"])
    if json_out:
        json_out.write_text(json.dumps(res, indent=1))


def bench_cmd(
    pre: Optional[Path] = typer.Argument(None, help="Pretraining run directory; omit with --from-scratch."),
    from_scratch: bool = typer.Option(False, help="No pretraining: train --model from scratch on each task "
                                      "(needs --out)."),
    model: str = typer.Option("embbert", help="Model config for --from-scratch."),
    patience: int = typer.Option(3, help="Stop a task after this many epochs without a better "
                                 "validation score (0: never)."),
    suite: str = typer.Option("tinynlp", help="tinynlp or glue."),
    tasks: Optional[str] = typer.Option(None, help="Comma-separated subset of the suite's tasks."),
    out: Optional[Path] = typer.Option(None, help="Where the finetuned runs go (default <pre>/bench-<suite>)."),
    epochs: int = typer.Option(3),
    max_len: int = typer.Option(128, help="Token budget per example (IMDb reviews are truncated)."),
    lr: float = typer.Option(5e-4),
    seed: int = typer.Option(0),
    max_train: Optional[int] = typer.Option(None, help="Use at most this many training examples per task."),
    minutes: Optional[float] = typer.Option(None, help="Wall-time limit per task."),
    data_dir: Optional[Path] = typer.Option(None),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON here."),
    reuse: bool = typer.Option(False, help="Reuse tasks already finetuned in OUT/<task> (run.json present)."),
    task_max_len: Optional[str] = typer.Option(None, help="Per-task max_len overrides, e.g. imdb=256,emotion=64."),
    baseline: bool = typer.Option(True, help="Add the TF-IDF + LR validation score per task (needs tinylm[baseline])."),
    teacher: Optional[str] = typer.Option(None, help="`tfidf`: distil each classification task from the "
                                          "bag-of-words baseline (as `finetune --teacher tfidf`)."),
    task_tokenizer: bool = typer.Option(False, help="With --from-scratch: train an 8,192-token BPE on each "
                                        "task's training texts and the model on it (OUT/tokenizers/)."),
):
    """Finetune and evaluate every task of a suite; prints (and writes) a markdown table."""
    from tinylm.train.bench import bench
    from tinynlp_data import DataError
    if (pre is None) != from_scratch:
        _fail("give a pretraining run directory or --from-scratch (one of them)")
    try:
        res = bench(pre, suite, out, tasks=tasks.split(",") if tasks else None, epochs=epochs,
                    max_len=max_len, lr=lr, seed=seed, max_train=max_train, minutes=minutes,
                    data_dir=data_dir, log=lambda s: typer.echo(s, err=True), reuse=reuse,
                    task_max_len={k: int(v) for k, v in (kv.split("=") for kv in task_max_len.split(","))}
                    if task_max_len else None, baseline=baseline, patience=patience or None,
                    model=model if from_scratch else None, teacher=teacher,
                    task_tokenizer=8192 if task_tokenizer else None)
    except (DataError, KeyError, ValueError) as e:
        _fail(str(e).strip("'\""))
    typer.echo(res["table"])
    if json_out:
        json_out.write_text(json.dumps(res, indent=1))


# the small transformer of the spine (tinylm/models/tiny.py)
def train_tiny_cmd(task: str = typer.Option(..., help="task name, e.g. emotion"),
          out: Path = typer.Option(..., help="run directory to write"),
          config: str = typer.Option("tiny", help="model config: tiny (default model) or micro (seconds, for tests)"),
          epochs: int = typer.Option(6, help="training epochs; the best one on validation is kept"),
          lr: float = typer.Option(1e-3, help="peak learning rate (AdamW, cosine decay)"),
          seed: int = typer.Option(0),
          limit: Optional[int] = typer.Option(None, help="use only the first N training examples"),
          data_dir: Optional[Path] = typer.Option(None, help="data bundle root (default: $TINYLM_DATA, then ../shared/data)"),
          train_file: Optional[Path] = typer.Option(None, help="a training JSONL(.gz) file instead of the task's train split"),
          val_file: Optional[Path] = typer.Option(None, help="a validation JSONL(.gz) file instead of the task's validation split")):
    """Train the small transformer classifier (Flax) on a task's train split."""
    from tinylm.train.tiny import train_tiny
    with progress() as prog:
        bar = prog.add_task("training", total=None, info="")

        def cb(epoch, i, steps, loss):
            prog.update(bar, total=steps * epochs, completed=epoch * steps + i + 1,
                        info=f"epoch {epoch + 1} loss {loss:.3f}")
        try:
            meta = train_tiny(task, out, config, epochs=epochs, lr=lr, seed=seed, data_dir=data_dir,
                              train_file=train_file, val_file=val_file, limit=limit, progress=cb)
        except (KeyError, ValueError) as e:
            fail(str(e).strip("'\""))
    console.print(f"best validation {meta['metric']}: {meta['val_score']:.4f} "
                  f"({meta['train_seconds']} s) -> {out}")


# (name, command) for the app in tinylm/cli/__init__.py; `train` (the small model) is listed there first
COMMANDS = [("tokenizer", tokenizer_cmd), ("pretrain", pretrain_cmd), ("finetune", finetune_cmd),
            ("baseline", baseline_cmd), ("bench", bench_cmd)]
