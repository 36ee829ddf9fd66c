"""One code tree's post-processing, timed on a stored network pass (run by benchmarks.postprocess_bench).

Started as `python postprocess_worker.py PASS_FILE` with PYTHONPATH set to the tree under test, so
`runtime` is that tree's; it imports nothing else of the project. It reads a number N per line on
stdin and answers each with one JSON line: N wall and CPU timings (ms) of the post-processing the
device times as 'postprocess' (segmentation from the final pass, cells and counts, area %), and of
`read_pass` (the per-pass bookkeeping of the scale search). Its first line carries the counts and a
digest of every cell record, the instance labels and the area %, for comparing trees.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import sys
import time
from typing import Any, Callable

import numpy as np


def _timed(fn: Callable[[], Any], n: int) -> dict[str, list[float]]:
    wall, cpu = [], []
    for _ in range(n):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(1000.0 * (time.perf_counter() - w0))
        cpu.append(1000.0 * (time.process_time() - c0))
    return {"wall": wall, "cpu": cpu}


def _digest(found: Any, area: dict[str, float]) -> str:
    """sha256 of everything the post-processing gives: each cell record, the instance labels and
    the area percentages, so two trees' results can be compared for identity."""
    digest = hashlib.sha256()
    for cell in found.cells.ordered():
        digest.update(repr(dataclasses.astuple(cell)).encode())
    for name in sorted(found.labels):
        digest.update(name.encode() + np.ascontiguousarray(found.labels[name], np.int32).tobytes())
    digest.update(repr(sorted(area.items())).encode())
    return digest.hexdigest()


def main(pass_file: str) -> None:
    from runtime.analysis.scale_search import find_segmentation_cells, to_segmentation
    from runtime.contracts.card_sections import InferencePlan
    from runtime.contracts.classes import area_percentages
    from runtime.inference.passes import read_pass
    from runtime.inference.preprocess import Prepared

    stored = pickle.loads(open(pass_file, "rb").read())
    prepared = Prepared(tensor=np.zeros(0, np.float32), geometry=stored["geometry"], scale=stored["decision"])
    plan = InferencePlan.from_dict(stored["plan"])
    final = read_pass(prepared, stored["logits"], stored["heat"], stored["runs"])

    def postprocess() -> tuple[Any, dict[str, float]]:
        seg = to_segmentation([final], plan)
        return find_segmentation_cells(seg, um_per_px=stored["um_per_px"]), area_percentages(seg.mask)

    def bookkeeping() -> None:
        read_pass(prepared, stored["logits"], stored["heat"], stored["runs"])

    found, area = postprocess()  # the digest is taken once, outside the timed runs
    print(json.dumps({"ready": True, "counts": found.cells.counts, "digest": _digest(found, area)}), flush=True)
    for line in sys.stdin:
        n = int(line)
        print(json.dumps({"postprocess": _timed(postprocess, n), "read_pass": _timed(bookkeeping, n)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
