"""Capture ahead: with presses queued, the next field's frame is captured while the current one is
analysed; still one result per press, in press order, one camera capture at a time, a failed
capture answered for its own press, and nothing queued before a stop lost or duplicated.
Real cameras (synthetic smears, image folders), the real int8 model, ONNX Runtime, SQLite outbox."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Callable

import cv2

from _device_model import UM_PER_PX, trained_model_path
from runtime.capture.cameras import Camera, FolderCamera, Frame, SyntheticCamera
from runtime.capture.synthetic import generate_smear
from runtime.capture.triggers import ManualTrigger, TriggerEvent
from runtime.contracts.config import FolderCameraConfig, SyntheticCameraConfig, config_from_dict
from runtime.delivery.sinks import FileSink
from runtime.device.assembly import build_device
from runtime.device.loop import Device, DeviceParts, DeviceSettings, ModelHolder
from runtime.inference.session import SessionOptions

OPTIONS = SessionOptions(providers=("cpu",), intra_op_threads=2)
SMALL = {"width": 256, "height": 192}


class WitnessCamera:
    """A real camera behind a recorder: when each capture started and ended, on which thread, and
    whether the camera was ever used by two threads at once. `delay_s` makes every capture take a
    known time (exposure and transfer of a real camera); `on_capture(i)` runs as capture i starts."""

    def __init__(self, camera: Camera, delay_s: float = 0.0, on_capture: Callable[[int], None] | None = None):
        self.camera, self.name = camera, camera.name
        self.delay_s, self.on_capture = delay_s, on_capture
        self.spans: list[tuple[float, float]] = []
        self.threads: list[str] = []
        self.concurrent_uses = 0
        self._in_use = threading.Lock()

    @contextmanager
    def _use(self):
        if not self._in_use.acquire(blocking=False):
            self.concurrent_uses += 1
            self._in_use.acquire()
        try:
            yield
        finally:
            self._in_use.release()

    def capture(self) -> Frame:
        with self._use():
            start = time.monotonic()
            self.threads.append(threading.current_thread().name)
            if self.on_capture is not None:
                self.on_capture(len(self.spans))
            try:
                time.sleep(self.delay_s)
                return self.camera.capture()
            finally:
                self.spans.append((start, time.monotonic()))

    def available(self) -> bool:
        with self._use():
            return self.camera.available()

    def close(self) -> None:
        with self._use():
            self.camera.close()


class PacedDiagnoser:
    """Decision support that takes a known time (the last stage of each field's analysis) and
    records when it ran."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spans: list[tuple[float, float]] = []

    def __call__(self, sample, smear):
        start = time.monotonic()
        time.sleep(self.seconds)
        self.spans.append((start, time.monotonic()))
        return None


def _device(tmp_path, camera: Camera, **parts) -> Device:
    return Device("scope-ahead", DeviceParts(camera=camera, model=ModelHolder(trained_model_path(), OPTIONS),
                                             publisher=FileSink(tmp_path / "results"), **parts),
                  DeviceSettings(idle_poll_s=0.05))


def _queue(device: Device, *kinds: str) -> None:
    for kind in kinds:
        if kind == "capture":
            device.events.capture("test")
        elif kind == "quit":
            device.events.quit("test")
        else:
            device.events.put(TriggerEvent("sample", "test", payload={"sample_id": kind}))


def _published(tmp_path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")), key=lambda m: m["seq"])


def test_queued_presses_one_result_each_in_press_order(tmp_path):
    camera = WitnessCamera(SyntheticCamera(SyntheticCameraConfig(seed=5, **SMALL)))
    device = _device(tmp_path, camera)
    _queue(device, "S-1", "capture", "capture", "capture", "S-2", "capture", "capture", "quit")
    outcomes = device.run()
    assert [o.status for o in outcomes] == ["ok"] * 5
    assert [o.frame.source for o in outcomes] == [f"synthetic seed {s}" for s in range(5, 10)]
    assert [o.result["seq"] for o in outcomes] == [0, 1, 2, 3, 4]
    placed = [(o.result["sample"]["sample_id"], o.result["sample"]["field_index"]) for o in outcomes]
    assert placed == [("S-1", 0), ("S-1", 1), ("S-1", 2), ("S-2", 0), ("S-2", 1)]
    assert [m["result_id"] for m in _published(tmp_path)] == [o.result["result_id"] for o in outcomes]
    # Captured ahead exactly when the next queued event was a press (not across the sample change),
    # and never two captures at once.
    main = threading.current_thread().name
    assert [name == main for name in camera.threads] == [True, False, False, True, False]
    assert camera.concurrent_uses == 0


def test_capture_of_the_next_field_runs_during_the_analysis_of_this_one(tmp_path):
    camera = WitnessCamera(SyntheticCamera(SyntheticCameraConfig(seed=1, **SMALL)), delay_s=0.2)
    analysis = PacedDiagnoser(0.3)
    device = _device(tmp_path, camera, diagnoser=analysis)
    presses = 4
    _queue(device, *["capture"] * presses, "quit")
    outcomes = device.run()
    assert [o.status for o in outcomes] == ["ok"] * presses
    for k in range(presses - 1):
        next_start = camera.spans[k + 1][0]
        assert camera.spans[k][1] <= next_start < analysis.spans[k][1], f"field {k + 1} was not captured during {k}"
    capture_s = [end - start for start, end in camera.spans]
    assert all(o.result["timings_ms"]["capture"] >= 1000 * 0.2 for o in outcomes)  # each field keeps its own time
    serial_s = sum(capture_s) + sum(o.result["timings_ms"]["total"] for o in outcomes) / 1000
    wall_s = analysis.spans[-1][1] - camera.spans[0][0]
    assert wall_s < serial_s
    assert camera.concurrent_uses == 0


def _smear_file(path, seed: int) -> None:
    cv2.imwrite(str(path), generate_smear(seed, 192, 256, UM_PER_PX).image)


def test_a_failed_capture_ahead_is_its_own_press_error_and_the_queue_goes_on(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    _smear_file(folder / "a.png", 1)
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _smear_file(folder / "c.png", 2)
    _smear_file(folder / "d.png", 3)
    camera = WitnessCamera(FolderCamera(FolderCameraConfig(path=str(folder), loop=False)))
    device = _device(tmp_path, camera)
    device.um_per_px = UM_PER_PX
    _queue(device, *["capture"] * 5, "quit")
    outcomes = device.run()
    assert [o.status for o in outcomes] == ["ok", "error", "ok", "ok", "error"]
    assert "b.png: not a readable image" in outcomes[1].message
    assert "all 4 images have been captured" in outcomes[4].message
    main = threading.current_thread().name
    assert camera.threads[1] != main and camera.threads[4] != main  # both failures were captures ahead
    assert [o.frame.source.rsplit("/", 1)[-1] for o in outcomes if o.status == "ok"] == ["a.png", "c.png", "d.png"]
    assert [m["seq"] for m in _published(tmp_path)] == [0, 1, 2]


def test_stop_while_a_field_is_captured_ahead_loses_and_repeats_nothing(tmp_path, local_broker):
    """SIGTERM's quit arrives while the second press's frame is being captured: every press queued
    before it is analysed and in the SQLite outbox exactly once; presses after it are not captured."""
    config = config_from_dict({
        "device_id": "scope-stop",
        "model": {"path": str(trained_model_path()), "providers": ["cpu"], "threads": 2},
        "camera": {"type": "synthetic", **SMALL},
        "publisher": {"type": "mqtt", "host": "127.0.0.1", "port": local_broker.port, "site": "lab",
                      "outbox": str(tmp_path / "outbox.sqlite3")},
    })
    setup = build_device(config, trigger=ManualTrigger())
    device = setup.device

    def stop_during_second_capture(index: int) -> None:
        if index == 1:
            device.events.quit("SIGTERM")
            device.events.capture("after stop")
            device.events.capture("after stop")

    device.camera = camera = WitnessCamera(SyntheticCamera(SyntheticCameraConfig(seed=7, **SMALL)), delay_s=0.1,
                                           on_capture=stop_during_second_capture)
    _queue(device, "capture", "capture", "capture")
    setup.start()
    try:
        outcomes = device.run()
    finally:
        setup.stop()
    assert [o.status for o in outcomes] == ["ok"] * 3
    assert [o.frame.source for o in outcomes] == ["synthetic seed 7", "synthetic seed 8", "synthetic seed 9"]
    assert len(camera.spans) == 3 and device.events.pending() == 2  # nothing captured for the presses after it
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as db:
        results = db.execute("SELECT result_id, seq FROM outbox WHERE kind = 'results' ORDER BY seq").fetchall()
        media_seqs = {seq for (seq,) in db.execute("SELECT seq FROM outbox WHERE kind = 'media'")}
    assert results == [(o.result["result_id"], o.result["seq"]) for o in outcomes]
    assert [seq for _, seq in results] == [0, 1, 2] and media_seqs == {0, 1, 2}
