"""`workers: K` in server.yaml: K server processes behind one `smearscope serve`.

Processes, not threads: validation and JSON work hold Python's GIL, so threads would not add
throughput. Each worker is a full ResultServer with its own MQTT client id (`<client_id>-<i>`, a
stable persistent session) in the config's `share_group`; the broker spreads results over them.
The parent only supervises: a worker that dies (killed, out of memory) is started again, and
SIGINT/SIGTERM stop them all. Every worker commits before it acks, so a dead worker loses nothing:
the broker redelivers what it had not acknowledged.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from multiprocessing.process import BaseProcess

from server.config import ServerConfig

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 15.0


def _worker_main(config: ServerConfig, index: int, log_level: int) -> None:
    from server.service import ResultServer

    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ResultServer(config.for_worker(index)).run_forever(stop)


def serve_workers(config: ServerConfig, stop: threading.Event, log_level: int = logging.WARNING) -> int:
    """Run `config.workers` worker processes until `stop` is set; returns how many restarts were needed."""
    context = multiprocessing.get_context("spawn")  # no inherited threads or sockets

    def launch(index: int) -> BaseProcess:
        proc = context.Process(target=_worker_main, args=(config, index, log_level), name=f"server-worker-{index}")
        proc.start()
        return proc

    procs = [launch(i) for i in range(config.workers)]
    restarts = 0
    try:
        while not stop.wait(0.5):
            for i, proc in enumerate(procs):
                if not proc.is_alive():
                    log.error("worker %d exited with %s; starting it again", i, proc.exitcode)
                    time.sleep(RESTART_DELAY_S)
                    procs[i] = launch(i)
                    restarts += 1
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
    return restarts
