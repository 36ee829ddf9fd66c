"""The device loop, running in a thread with a real model, real ONNX Runtime and real triggers:
every press gives an outcome, and bad frames, camera drop-outs and a bad model never stop it."""

from __future__ import annotations

import io
import json
import queue
import shutil
import threading
import time
from pathlib import Path

import cv2
import pytest

from _device_model import UM_PER_PX, trained_model_path
from runtime.capture.cameras import FolderCamera, OpenCVCamera, SyntheticCamera
from runtime.contracts.config import FolderCameraConfig, OpenCVCameraConfig, SyntheticCameraConfig
from runtime.device.loop import Device, DeviceParts, DeviceSettings, ModelHolder
from runtime.contracts.modelcard import card_path_for
from runtime.inference.session import SessionOptions
from runtime.delivery.sinks import FileSink
from runtime.contracts.sample import SampleContext, SampleTracker
from runtime.contracts.schema import validate
from runtime.capture.synthetic import generate_smear
from runtime.capture.triggers import ManualTrigger, RecordingStatus, StdinTrigger

OPTIONS = SessionOptions(providers=("cpu",), intra_op_threads=2)


@pytest.fixture(scope="session")
def model_path():
    return trained_model_path()


class Harness:
    """Runs Device.run() in a thread; outcomes arrive on a queue as the loop produces them."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.outcomes: queue.Queue = queue.Queue()
        device.on_outcome = self.outcomes.put
        self.status = RecordingStatus()
        device.indicators.append(self.status)
        self.thread = threading.Thread(target=device.run, daemon=True)

    def __enter__(self) -> "Harness":
        self.thread.start()
        return self

    def press(self) -> None:
        self.device.events.capture("test")

    def next(self, timeout: float = 60.0):
        return self.outcomes.get(timeout=timeout)

    def wait_state(self, state: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.device.state != state:
            assert time.monotonic() < deadline, f"state stayed {self.device.state}, expected {state}"
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self.device.events.quit("test")
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the loop did not stop on quit"


def _device(model_path, camera, tmp_path, um_per_px=None, **parts) -> Device:
    return Device("scope-test", DeviceParts(camera=camera, model=ModelHolder(model_path, OPTIONS),
                                            publisher=FileSink(tmp_path / "results"), **parts),
                  DeviceSettings(um_per_px=um_per_px, idle_poll_s=0.05))


def _published(tmp_path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results").glob("*.json"))]


def test_button_press_on_simulated_controller_to_valid_result(model_path, tmp_path):
    """End to end: CAPTURE on the controller simulator (real pty, real protocol) -> result/1 files."""
    from firmware_bridge import open_bridge
    from runtime.capture.bridge_trigger import BridgeStatus, BridgeTrigger

    bridge = open_bridge({"type": "simulator"})
    assert bridge.wait_connected(10.0)
    samples = SampleTracker([SampleContext("S-1", "p-1", {"fpg_mmol_l": 7.2}, 2)])
    device = _device(model_path, SyntheticCamera(SyntheticCameraConfig(seed=3, width=320, height=240)), tmp_path,
                     samples=samples, indicators=[BridgeStatus(bridge)])
    trigger = BridgeTrigger(bridge)
    trigger.start(device.events)
    try:
        with Harness(device) as loop:
            for _ in range(3):  # quick presses: the later ones arrive while the first is analysed
                bridge.simulator.press()
            outcomes = [loop.next() for _ in range(3)]
            loop.wait_state("idle")
            deadline = time.monotonic() + 5
            while bridge.simulator.status_pattern != "idle" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert bridge.simulator.status_pattern == "idle"
    finally:
        trigger.stop()
    assert [o.status for o in outcomes] == ["ok"] * 3 and trigger.presses == 3
    results = _published(tmp_path)
    assert len(results) == 3
    for message in results:
        validate(message)
    assert sorted(m["seq"] for m in results) == [0, 1, 2]
    by_seq = sorted(results, key=lambda m: m["seq"])
    assert [m["sample"]["sample_id"] for m in by_seq] == ["S-1", "S-1", "S-1"]
    assert [m["sample"]["field_index"] for m in by_seq] == [0, 1, 2]
    assert all(m["derived"]["um_per_px"] == SyntheticCameraConfig().um_per_px for m in by_seq)
    assert "busy" in loop.status.states


def test_presses_during_analysis_are_queued_not_lost(model_path, tmp_path):
    device = _device(model_path, SyntheticCamera(SyntheticCameraConfig(seed=1, width=256, height=192)), tmp_path)
    trigger = ManualTrigger()
    trigger.start(device.events)
    with Harness(device) as loop:
        for _ in range(5):
            trigger.press()
        outcomes = [loop.next() for _ in range(5)]
    assert [o.status for o in outcomes] == ["ok"] * 5
    assert [o.result["seq"] for o in outcomes] == [0, 1, 2, 3, 4]
    assert device.events.received == 5


def _smear_file(path: Path, seed: int) -> None:
    cv2.imwrite(str(path), generate_smear(seed, 192, 256, UM_PER_PX).image)


def test_corrupt_frame_reports_an_error_and_the_loop_carries_on(model_path, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    _smear_file(folder / "a.png", 1)
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _smear_file(folder / "c.png", 2)
    device = _device(model_path, FolderCamera(FolderCameraConfig(path=str(folder))), tmp_path, um_per_px=UM_PER_PX)
    with Harness(device) as loop:
        loop.press()
        first = loop.next()
        loop.press()
        bad = loop.next()
        loop.wait_state("error")
        loop.press()
        third = loop.next()
        loop.wait_state("idle")
    assert first.status == "ok" and third.status == "ok"
    assert bad.status == "error" and "b.png: not a readable image" in bad.message
    assert ("error", bad.message) in loop.status.history
    assert len(_published(tmp_path)) == 2


def test_camera_that_disconnects_and_comes_back(model_path, tmp_path):
    frames = tmp_path / "camera"
    frames.mkdir()
    for i in range(2):
        _smear_file(frames / f"f{i:03d}.png", 10 + i)
    camera = OpenCVCamera(OpenCVCameraConfig(source=str(frames / "f%03d.png"), backend="images",
                                             discard_frames=0, reconnect_interval_s=0.01))  # the shortest allowed
    device = _device(model_path, camera, tmp_path, um_per_px=UM_PER_PX)
    with Harness(device) as loop:
        for _ in range(2):
            loop.press()
            assert loop.next().status == "ok"
        shutil.rmtree(frames)  # the camera runs dry, then is unplugged
        loop.press()
        dropped = loop.next()
        time.sleep(0.02)  # past the reconnect interval: the next capture tries to reopen
        loop.press()
        unplugged = loop.next()
        loop.wait_state("offline")
        frames.mkdir()  # plugged back in: the idle loop notices and goes back to idle by itself
        _smear_file(frames / "f000.png", 20)
        loop.wait_state("idle")
        loop.press()
        back = loop.next()
    assert dropped.status == "offline" and "stopped delivering frames" in dropped.message
    assert unplugged.status == "offline" and "cannot be opened" in unplugged.message
    assert back.status == "ok"
    assert [m["seq"] for m in sorted(_published(tmp_path), key=lambda m: m["seq"])] == [0, 1, 2]


def test_model_hash_mismatch_is_reported_and_fixed_without_restart(model_path, tmp_path):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    model = model_dir / model_path.name
    shutil.copy(model_path, model)
    shutil.copy(card_path_for(model_path), card_path_for(model))
    model.write_bytes(model_path.read_bytes() + b"tampered")
    device = _device(model, SyntheticCamera(SyntheticCameraConfig(width=256, height=192)), tmp_path)
    with Harness(device) as loop:
        loop.wait_state("error")
        loop.press()
        refused = loop.next()
        loop.press()
        still = loop.next()
        shutil.copy(model_path, model)  # the right file is put back
        loop.press()
        fixed = loop.next()
    assert refused.status == "error" and still.status == "error"
    assert f"{model.name}: sha256" in refused.message and "does not match its card" in refused.message
    assert fixed.status == "ok"
    assert len(_published(tmp_path)) == 1


def test_keyboard_trigger_captures_switches_sample_and_quits(model_path, tmp_path):
    device = _device(model_path, SyntheticCamera(SyntheticCameraConfig(width=256, height=192)), tmp_path)
    StdinTrigger(io.StringIO("\nsample S-77 p-77\n\nbogus\nq\n")).start(device.events)
    outcomes = device.run()
    assert [o.status for o in outcomes] == ["ok", "ok"]
    assert outcomes[0].result["sample"]["sample_id"].startswith("auto-")
    assert outcomes[1].result["sample"] == {"sample_id": "S-77", "patient_id": "p-77", "field_index": 0, "labs": {}}


def test_failing_publisher_is_an_error_outcome_not_a_crash(model_path, tmp_path):
    sink = FileSink(tmp_path / "results")
    device = _device(model_path, SyntheticCamera(SyntheticCameraConfig(width=256, height=192)), tmp_path)
    device.publisher = sink
    shutil.rmtree(sink.directory)
    sink.directory.write_text("a file where the folder was")
    with Harness(device) as loop:
        loop.press()
        failed = loop.next()
        sink.directory.unlink()
        sink.directory.mkdir()
        loop.press()
        ok = loop.next()
    assert failed.status == "error" and failed.message.startswith("I/O error") and "results" in failed.message
    assert ok.status == "ok"
