"""`tinylm eval --workers N`: N firmware instances (QEMU) evaluating one example list together.

Each worker is a thread that owns one DeviceEngine (its own QEMU process, socket and reference
check) and takes the next example index from one shared queue, so every example runs exactly
once, on whichever instance is free; the firmware is deterministic (bit-exact logits,
instruction counts exact under -icount), so which instance ran an example changes nothing in its
record, and the summary, which orders records by index, equals one worker's. Records are written
under one lock, so the progress file stays one whole JSON line per example and --resume works
as with one worker.

A worker whose device stops answering puts its example back and stops; the others carry on
(the run is then complete unless every worker was lost). Any other error stops them all."""
from __future__ import annotations

import queue
import threading


def _device_failure(e: BaseException) -> bool:
    import serial

    from tinylm.harness.device import DeviceError, DeviceTimeout
    return isinstance(e, (DeviceTimeout, DeviceError, serial.SerialException, OSError))


def run_parallel(engines, todo: list[int], encode_one, record) -> dict:
    """Runs engine.predict on encode_one(i) for every i in todo across the engines; record(i, res)
    is called under a lock. Returns {"lost": [messages of workers whose device stopped]}; raises
    the first device failure if no worker is left with examples remaining, any other error as is,
    and KeyboardInterrupt after every worker has finished its current example."""
    work: queue.SimpleQueue = queue.SimpleQueue()
    for i in todo:
        work.put(i)
    lock, stop = threading.Lock(), threading.Event()
    lost: list[BaseException] = []
    fatal: list[BaseException] = []

    def worker(engine):
        i = None
        try:
            engine.start()
            while not stop.is_set():
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    return
                ids = encode_one(i)
                res = {"tokens": len(ids), **engine.predict(ids)}
                with lock:
                    record(i, res)
                i = None
        except BaseException as e:   # noqa: BLE001 -- handed to the main thread below
            if i is not None:
                work.put(i)          # not recorded: another worker (or --resume) runs it
            if _device_failure(e):
                lost.append(e)
            else:
                fatal.append(e)
                stop.set()
        finally:
            engine.stop()

    threads = [threading.Thread(target=worker, args=(eng,), name=f"eval-worker-{k}", daemon=True)
               for k, eng in enumerate(engines)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
        raise
    if fatal:
        raise fatal[0]
    if lost and not work.empty():
        raise lost[0]
    return {"lost": [str(e) for e in lost]}
