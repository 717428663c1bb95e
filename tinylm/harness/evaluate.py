"""`tinylm eval`: one command, three engines, chosen from what it is given.

- a run directory (run.json)        -> the float model on the host (JAX)
- an .onnx quantized graph           -> the integer reference on the host (numpy)
- a build directory (build.json)     -> the firmware on a device over serial (a port/URL, or
                                        QEMU started here for a qemu-* board), every example
                                        checked bit for bit against the integer reference

Results are appended to a progress file one example at a time, so an interrupted run (device
killed, Ctrl-C) continues with --resume without losing or repeating an example; the file records
the run's identity, and --resume refuses another run's file (tinylm/harness/progress.py).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinynlp_data import compute_metric, get_task, load_split
from tinynlp_data.loader import split_path

from codegen.scores import logit_scale_q, scores
from tinylm.harness.progress import ProgressError, identity, resume_run, sha256_files, start_run
from tinylm.train.floatrun import is_run_dir
from tinylm.tokenizer import encode, load_tokenizer


class EvalError(RuntimeError):
    pass


@dataclass
class Engine:
    kind: str                    # float | reference | device
    target: Path
    max_len: int
    tokenizer: object
    label_names: list
    extra: dict = field(default_factory=dict)
    windows: dict | None = None   # {"stride", "max_input"}: longer inputs as windows (graph/windows.py)

    @property
    def input_len(self) -> int:
        """What an input is truncated to: L, or the longest input the windows accept."""
        return self.windows["max_input"] if self.windows else self.max_len

    def _windowed(self, run_one, ids):
        from tinylm.graph import windows
        return windows.run(run_one, ids, self.max_len, self.windows and self.windows["stride"])

    def start(self):
        pass

    def stop(self):
        pass

    def target_sha256(self) -> str:
        """What this engine evaluates, as a hash: the progress file's identity."""
        return sha256_files([self.target])


class FloatEngine(Engine):
    def __init__(self, path):
        from tinylm.train.floatrun import FloatRun
        self.run = FloatRun(path)
        super().__init__("float", Path(path), self.run.max_len, self.run.tokenizer, self.run.label_names)

    def predict(self, ids: list[int]) -> dict:
        return self.predict_many([ids])[0]

    def predict_many(self, batch: list[list[int]]) -> list[dict]:
        if not self.windows:
            return [{"logits": row.tolist()} for row in self.run.predict(batch)]
        from tinylm.graph import windows
        parts = [windows.windows(ids, self.max_len, self.windows["stride"]) for ids in batch]
        rows = iter(self.run.predict([w for p in parts for w in p]))   # one batched pass
        return [{"logits": np.sum([next(rows) for _ in p], axis=0).tolist(), "windows": len(p)} for p in parts]

    def target_sha256(self) -> str:
        return sha256_files(self.target / f for f in ("run.json", "tokenizer.json", "params.msgpack"))


class ReferenceEngine(Engine):
    def __init__(self, path):
        from tinylm import graph
        from tinylm.graph import reference
        self.graph = graph.load(path)
        self.reference = reference
        super().__init__("reference", Path(path), self.graph.max_len,
                         load_tokenizer(self.graph.meta["tokenizer"]), self.graph.label_names)

    def predict(self, ids):
        return {"logits": self._windowed(lambda w: self.reference.run(self.graph, w), ids).tolist()}

    def target_sha256(self) -> str:
        return self.graph.sha256


class DeviceEngine(Engine):
    """Firmware over serial; the reference runs beside it on every example."""

    def __init__(self, build_dir, port: str | None = None, timeout: float = 30.0):
        from codegen import toolchain
        from tinylm import graph
        from tinylm.graph import reference
        build_dir = Path(build_dir)
        meta = json.loads((build_dir / "build.json").read_text())
        self.board = toolchain.load_board(meta["board"])
        self.graph = graph.load(build_dir / meta["model"])
        self.reference = reference
        self.elf = build_dir / (meta.get("elf") or "firmware.elf")
        self.port, self.timeout = port, timeout
        self.qemu = self.device = None
        super().__init__("device", build_dir, self.graph.max_len,
                         load_tokenizer(self.graph.meta["tokenizer"]), self.graph.label_names,
                         {"board": self.board["name"]}, meta.get("windows"))
        if self.windows:   # the longest input is that many inferences in one `infer`
            from tinylm.graph.windows import spans
            self.timeout = timeout * len(spans(self.windows["max_input"], self.max_len, self.windows["stride"]))

    def start(self):
        from tinylm.harness.device import Device, DeviceError, DeviceTimeout, DeviceUnreachable
        from tinylm.harness.qemu import QemuError
        url = self.port
        try:
            if url is None:
                if self.board.get("runs_on") != "qemu":
                    raise EvalError(f"board {self.board['name']} is real hardware: give its serial port with "
                                    "--port (e.g. --port /dev/ttyACM0)")
                from tinylm.harness.qemu import QemuBoard
                if not self.elf.is_file():
                    raise EvalError(f"{self.elf} does not exist: run `tinylm build` first")
                self.qemu = QemuBoard(self.board, self.elf)
                url = self.qemu.url
            self.device = Device(url, timeout=self.timeout)
            info = self.device.info()
        except (DeviceUnreachable, QemuError) as e:
            self.stop()
            raise EvalError(str(e)) from None
        except (DeviceTimeout, DeviceError) as e:
            self.stop()
            raise EvalError(f"the device at {url} did not answer tinylm-info as tinylm firmware does ({e}); "
                            "check that it runs this build (tinylm flash) and the baud rate") from None
        want = self.graph.sha256[:16]
        if info.get("hash") != want:
            raise EvalError(f"the device runs model {info.get('model')!r} hash {info.get('hash')}, but "
                            f"{self.target} holds hash {want}: flash this build first")
        self.extra["device_info"] = info
        self.scale_q = logit_scale_q(self.graph.meta.get("logit_scale"))

    def target_sha256(self) -> str:
        # the model and the firmware that runs it (a rebuild for another board changes the ELF)
        return sha256_files([self.target / "build.json", self.elf])   # build.json holds the model's hash

    def stop(self):
        if self.device:
            self.device.close()
        if self.qemu:
            self.qemu.stop()
        self.device = self.qemu = None

    def predict(self, ids):
        t0 = time.perf_counter()
        self.device.load(ids)
        t1 = time.perf_counter()
        logits = self.device.infer_loaded()
        t2 = time.perf_counter()
        cost = self.device.cost()
        ref = self._windowed(lambda w: self.reference.run(self.graph, w), ids).tolist()
        t3 = time.perf_counter()
        lap = self.device.last_lap_us
        got_scores = self.device.last_scores
        extra = {} if got_scores is None else {"scores": got_scores,
                                               "scores_match": got_scores == scores(ref, *self.scale_q)}
        # infer_s is the host-side time of the `infer` command: device compute plus one round trip
        return {"logits": logits, "reference": ref, "match": logits == ref, **extra,
                "wall_s": t3 - t0, "load_s": t1 - t0, "infer_s": t2 - t1, "check_s": t3 - t2,
                "device_us": (lap[1] - lap[0]) if lap else None, **cost}


def open_engine(target, port: str | None = None, windows: dict | None = None) -> Engine:
    """The engine for a build directory, a run directory or a graph. windows (float and
    reference only; a build has its own, from `tinylm build --windows`) makes inputs longer than
    L run as windows."""
    p = Path(target)
    if p.is_dir() and (p / "build.json").is_file():
        if windows:
            raise EvalError(f"{target} is a build: its windows are set by `tinylm build --windows`, "
                            "not by eval")
        return DeviceEngine(p, port)
    engine = None
    if is_run_dir(p):
        engine = FloatEngine(p)
    elif p.is_file() and p.suffix == ".onnx":
        engine = ReferenceEngine(p)
    if engine is not None:
        if windows:
            from tinylm.graph.windows import WindowError, check
            try:
                check(engine.max_len, windows["stride"], windows["max_input"])
            except WindowError as e:
                raise EvalError(str(e)) from None
            engine.windows = dict(windows)
        return engine
    if not p.exists():
        raise EvalError(f"{target} does not exist")
    raise EvalError(f"{target}: not a build directory (build.json), a run directory (run.json) "
                    "or a quantized graph (.onnx)")


REPO = Path(__file__).resolve().parents[2]
TRACKED_MODELS = REPO / "models"      # committed artefacts: results never go in here


def default_json(target, task: str, engine: str) -> Path:
    """<build or run dir>/eval-<task>-<engine>.json; beside a .onnx, eval-<task>-reference-<stem>.json
    (two graphs in one folder must not collide). A target inside the repository's tracked models/
    writes to runs/eval/<its path under models/>/ instead."""
    p = Path(target).resolve()
    base, name = (p, f"eval-{task}-{engine}.json") if p.is_dir() else (p.parent, f"eval-{task}-{engine}-{p.stem}.json")
    try:
        rel = p.relative_to(TRACKED_MODELS)
    except ValueError:
        return base / name
    sub = rel.parent / rel.stem if p.is_file() else rel
    return REPO / "runs" / "eval" / sub / f"eval-{task}-{engine}.json"


def check_labels(engine: Engine, t, target) -> None:
    """A model's classes are its label names, in order: on another task's labels its argmax
    would be scored against the wrong classes without a word."""
    want, have = list(t.label_names), list(engine.label_names)
    if not want or have == want:
        return
    show = lambda names: ",".join(names[:6]) + (",..." if len(names) > 6 else "")
    raise EvalError(f"{target} predicts labels [{show(have)}] ({len(have)}) but task {t.name} has "
                    f"[{show(want)}] ({len(want)}): evaluate it on its own task, or pass --force")


def select_examples(t, data, data_dir, sample, seed, limit) -> list:
    """The validation split (or --data), then a fixed seeded --sample in file order, then --limit."""
    examples = load_split(t, "validation", data_dir, data)
    if sample and sample < len(examples):
        keep = np.sort(np.random.default_rng(seed).choice(len(examples), sample, replace=False))
        examples = [examples[i] for i in keep]
    return examples[:limit] if limit else examples


def evaluate(target, task: str, *, data: str | None = None, data_dir=None, limit: int | None = None,
             sample: int | None = None, seed: int = 0, port: str | None = None, json_out: str | Path | None = None, resume: bool = False,
             progress=None, force: bool = False, workers: int = 1, windows: dict | None = None) -> dict:
    t = get_task(task)
    examples = select_examples(t, data, data_dir, sample, seed, limit)
    engine = open_engine(target, port, windows)
    if not force:
        check_labels(engine, t, target)
    if workers < 1:
        raise EvalError("--workers must be at least 1")
    if workers > 1 and not (engine.kind == "device" and port is None and engine.board.get("runs_on") == "qemu"):
        raise EvalError("--workers N runs N QEMU instances: it needs a build for a qemu-* board and no --port")
    json_out = Path(json_out) if json_out else default_json(target, task, engine.kind)
    progress_file = json_out.with_name(json_out.name + ".progress.jsonl")
    data_file = Path(data) if data else split_path(t, "validation", data_dir)
    run = identity(target_sha256=engine.target_sha256(), engine=engine.kind, task=t.name,
                   data_sha256=sha256_files([data_file]), sample=sample, seed=seed, limit=limit,
                   windows=engine.windows if engine.kind != "device" else None)   # a build's: in its hash
    done: dict[int, dict] = {}
    repaired = False
    if resume and progress_file.is_file():
        try:
            done, repaired = resume_run(progress_file, run, [e.id for e in examples])
        except ProgressError as e:
            raise EvalError(str(e)) from None
    else:
        start_run(progress_file, run)
    json_out.parent.mkdir(parents=True, exist_ok=True)

    todo = [i for i in range(len(examples)) if i not in done]
    interrupted, lost = None, []
    t_start = time.perf_counter()
    if workers == 1:
        engine.start()
    try:
        with progress_file.open("a") as pf:
            def record(i, res):
                rec = {"index": i, "id": examples[i].id, **res}
                pf.write(json.dumps(rec) + "\n")
                pf.flush()
                done[i] = rec
                if progress:
                    progress(len(done), len(examples), rec)

            def encode_one(i):
                return encode(engine.tokenizer, examples[i].text, examples[i].text_b, engine.input_len)

            if workers > 1:
                from tinylm.harness.workers import run_parallel
                engines = [engine] + [DeviceEngine(target, None) for _ in range(workers - 1)]
                lost = run_parallel(engines, todo, encode_one, record)["lost"]
            elif isinstance(engine, FloatEngine):
                for s in range(0, len(todo), 256):
                    chunk = todo[s:s + 256]
                    batch = [encode(engine.tokenizer, examples[i].text, examples[i].text_b, engine.input_len) for i in chunk]
                    for i, ids, res in zip(chunk, batch, engine.predict_many(batch)):
                        record(i, {"tokens": len(ids), **res})
            else:
                for i in todo:
                    ids = encode_one(i)
                    record(i, {"tokens": len(ids), **engine.predict(ids)})
    except KeyboardInterrupt:
        interrupted = "interrupted (Ctrl-C)"
    except Exception as e:
        from tinylm.harness.device import DeviceError, DeviceTimeout
        import serial
        if isinstance(e, (DeviceTimeout, DeviceError, serial.SerialException, OSError)):
            interrupted = f"device stopped answering: {e}"
        else:
            raise
    finally:
        engine.stop()
    wall = time.perf_counter() - t_start

    result = summarize(t, examples, done, engine, wall)
    this_run = [done[i] for i in todo if i in done]
    if engine.kind == "device" and this_run and wall > 0:
        # the devices' share of the wall time: `infer` commands over all workers' time
        result["device_share"] = round(sum(r["infer_s"] for r in this_run) / (workers * wall), 4)
    result["workers"] = workers
    if lost:
        result["workers_lost"] = lost
    result.update({"target": str(target), "data": data or "validation", "complete": interrupted is None,
                   "sample": {"size": sample, "seed": seed} if sample else None,
                   "progress_file": str(progress_file), "run": run, "repaired": repaired})
    if interrupted:
        result["interrupted"] = interrupted + f"; {len(done)}/{len(examples)} examples kept, rerun with --resume"
    json_out.write_text(json.dumps(result, indent=2))
    result["json"] = str(json_out)
    return result


def summarize(t, examples, done: dict, engine: Engine, wall: float) -> dict:
    idx = sorted(done)
    recs = [done[i] for i in idx]
    gold = [examples[i].label for i in idx]
    if t.problem == "regression":
        preds = [r["logits"][0] for r in recs]
    else:
        preds = [int(np.argmax(r["logits"])) for r in recs]
    score = compute_metric(t.metric, preds, gold) if recs else None
    out = {"task": t.name, "metric": t.metric, "score": score, "examples": len(recs),
           "examples_total": len(examples), "engine": engine.kind, **engine.extra}
    if engine.kind == "device":
        mism = [r for r in recs if not r["match"]]
        out["mismatches"] = len(mism)
        checked = [r for r in recs if "scores_match" in r]
        if checked:   # m-results (EEMBC scores) against codegen/scores.py on the reference's logits
            out["score_mismatches"] = sum(not r["scores_match"] for r in checked)
        if mism:
            m = mism[0]
            out["first_mismatch"] = {"id": m["id"], "device": m["logits"], "reference": m["reference"]}
        instr = [r["instructions"] for r in recs if "instructions" in r]
        if instr:
            out["instructions_mean"] = float(np.mean(instr))
        cyc = [r["cycles"] for r in recs if "cycles" in r]
        if cyc:
            out["cycles_mean"] = float(np.mean(cyc))
        walls = [r["wall_s"] for r in recs]
        if walls:
            out["wall_s_per_example"] = float(np.mean(walls))
            for part in ("load_s", "infer_s", "check_s"):
                out[part.replace("_s", "_share")] = float(sum(r[part] for r in recs) / sum(walls))
        tokens = [r["tokens"] for r in recs]
        if tokens:
            out["tokens_mean"] = float(np.mean(tokens))
    out["wall_s"] = round(wall, 2)
    return out
