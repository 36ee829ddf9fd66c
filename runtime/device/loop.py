"""The device loop: wait for a trigger, capture, analyse, publish; one field at a time, forever.

Fields are analysed and published one at a time, in press order. When the next press is already
queued as a field's analysis starts, its frame is captured meanwhile on a worker thread
(runtime.device.ahead): the camera is never used by two threads at once.

Nothing a single capture does can stop the loop. A corrupt frame, a camera that drops out, a model
whose hash does not match its card, a publisher that fails: each becomes a CaptureOutcome with a
clear message and a status (error, offline), and the loop waits for the next trigger. The model is
loaded lazily and reloaded on the next capture after a failure, so replacing a bad model file
fixes the device without a restart; the camera reconnects the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from runtime.analysis.analyzer import Analyzer, Diagnoser, FrameAnalysis
from runtime.capture.cameras import Camera, CameraDisconnected, Frame
from runtime.contracts.config import QualityConfig
from runtime.contracts.errors import ModelError, SkipCapture, SmearscopeError
from runtime.inference.session import SessionOptions
from runtime.delivery.sinks import Publisher
from runtime.analysis.result import build_result
from runtime.contracts.sample import SampleContext, SampleSummary, SampleTracker, field_number
from runtime.inference.model import SegmentationModel
from runtime.capture.triggers import DeviceState, StatusIndicator, TriggerEvent, TriggerQueue
from runtime.device.ahead import CaptureAhead, take_shot

log = logging.getLogger(__name__)

OutcomeStatus = Literal["ok", "rejected", "error", "offline"]


@dataclass
class CaptureOutcome:
    """What one trigger produced: a published result, a rejected frame, or an error and why."""

    status: OutcomeStatus
    message: str
    trigger: str
    result: dict[str, Any] | None = None
    analysis: FrameAnalysis | None = field(default=None, repr=False)
    frame: Frame | None = field(default=None, repr=False)


class ModelHolder:
    """Loads the segmentation model on first use and again after a failure (never caches a failure)."""

    def __init__(self, path: str | Path | None, options: SessionOptions, flip_average: bool | None = None) -> None:
        self.path, self.options, self.flip_average = path, options, flip_average
        self._model: SegmentationModel | None = None

    def get(self) -> SegmentationModel:
        if self._model is None:
            self._model = SegmentationModel.load(self.path, self.options, flip_average=self.flip_average)
            log.info("model %s %s loaded on %s", self._model.card.name, self._model.card.version,
                     ", ".join(self._model.loaded.providers))
        return self._model


@dataclass
class DeviceParts:
    """What a device is made of, each part behind its interface (hardware, model, delivery)."""

    camera: Camera
    model: ModelHolder
    publisher: Publisher
    samples: SampleTracker = field(default_factory=SampleTracker)
    diagnoser: Diagnoser | None = None
    indicators: list[StatusIndicator] = field(default_factory=list)
    events: TriggerQueue = field(default_factory=TriggerQueue)


@dataclass(frozen=True)
class DeviceSettings:
    """How a device treats its captures (from the config's quality, calibration and output)."""

    quality: QualityConfig = field(default_factory=QualityConfig)
    um_per_px: float | None = None
    overlays_dir: str | Path | None = None
    first_seq: int = 0
    idle_poll_s: float = 1.0


class Device:
    """One microscope: camera, model, publisher, sample tracker and status indicators."""

    def __init__(self, device_id: str, parts: DeviceParts, settings: DeviceSettings = DeviceSettings(),
                 on_outcome: Callable[[CaptureOutcome], None] | None = None) -> None:
        self.device_id = device_id
        self.camera = parts.camera
        self.model = parts.model
        self.publisher = parts.publisher
        self.samples = parts.samples
        self.diagnoser = parts.diagnoser
        self.indicators = list(parts.indicators)
        self.events = parts.events
        self.quality = settings.quality
        self.um_per_px = settings.um_per_px
        self.overlays_dir = Path(settings.overlays_dir) if settings.overlays_dir else None
        self.seq = settings.first_seq
        self.idle_poll_s = settings.idle_poll_s
        self.on_outcome = on_outcome
        self.state: DeviceState = "idle"
        self.summaries: dict[str, SampleSummary] = {}
        self._analyzer: Analyzer | None = None
        self._ahead = CaptureAhead()

    # --- status -----------------------------------------------------------------------------

    def _set_state(self, state: DeviceState, detail: str = "") -> None:
        self.state = state
        for indicator in self.indicators:
            try:
                indicator.set_state(state, detail)
            except Exception:  # an LED that fails must not stop the microscope
                log.exception("status indicator %r failed", indicator)

    # --- the loop ---------------------------------------------------------------------------

    def run(self, events: TriggerQueue | None = None) -> list[CaptureOutcome]:
        """Handle events (default: `self.events`) until a quit event; returns every capture's outcome."""
        events = events or self.events
        outcomes: list[CaptureOutcome] = []
        self._startup()
        try:
            while True:
                event = events.get(timeout=self.idle_poll_s)
                if event is None:
                    self._recover_when_idle()
                    continue
                if event.kind == "quit":  # presses queued before it have all been answered
                    log.info("stopping (%s)", event.source)
                    break
                if event.kind == "sample":
                    self._switch_sample(event)
                    continue
                outcome = self.capture_once(event.source, events)
                outcomes.append(outcome)
                if self.on_outcome is not None:
                    try:
                        self.on_outcome(outcome)
                    except Exception:
                        log.exception("outcome callback failed")
        finally:
            self._ahead.drop()  # only an interrupted loop leaves one: a frame must not outlive its press
        return outcomes

    def _startup(self) -> None:
        """Load the model now so the first press is fast; a bad model shows as error, not a crash."""
        try:
            self._get_analyzer()
        except ModelError as exc:
            self._set_state("error", str(exc))
            return
        if self.camera.available():
            self._set_state("idle")
        else:
            self._set_state("offline", f"{self.camera.name} is not available")

    def _recover_when_idle(self) -> None:
        if self.state == "offline" and self.camera.available():
            self._set_state("idle", f"{self.camera.name} is back")

    def _switch_sample(self, event: TriggerEvent) -> None:
        payload = event.payload or {}
        try:
            context = SampleContext(str(payload.get("sample_id", "")), payload.get("patient_id"),
                                    dict(payload.get("labs") or {}), int(payload.get("fields") or 1))
        except (SmearscopeError, ValueError) as exc:
            log.warning("sample change from %s refused: %s", event.source, exc)
            return
        self.samples.set_current(context)
        log.info("sample %s from %s", context.sample_id, event.source)

    def _get_analyzer(self) -> Analyzer:
        model = self.model.get()
        if self._analyzer is None or self._analyzer.model is not model:
            self._analyzer = Analyzer(model, self.quality, self.diagnoser)
        return self._analyzer

    # --- one capture --------------------------------------------------------------------------

    def capture_once(self, trigger: str = "manual", queue: TriggerQueue | None = None) -> CaptureOutcome:
        """Capture, analyse and publish one frame; every failure becomes an outcome, never an exception.

        `queue` is the loop's: when its next event is a press, that press's frame is captured while
        this one is analysed, and its capture_once takes it."""
        self._set_state("busy")
        try:
            outcome = self._capture(trigger, queue)
        except CameraDisconnected as exc:
            outcome = CaptureOutcome("offline", str(exc), trigger)
        except SkipCapture as exc:
            outcome = CaptureOutcome("error", f"capture skipped: {exc}", trigger)
        except SmearscopeError as exc:
            outcome = CaptureOutcome("error", str(exc), trigger)
        except OSError as exc:  # a full disk, a vanished output folder: this capture fails, not the device
            outcome = CaptureOutcome("error", f"I/O error: {exc}", trigger)
        except Exception as exc:  # a bug must not stop the device: report it and carry on
            log.exception("capture failed unexpectedly")
            outcome = CaptureOutcome("error", f"internal error: {type(exc).__name__}: {exc}", trigger)
        if outcome.status in ("ok", "rejected"):
            self._set_state("idle")
        else:
            log.warning("capture (%s) %s: %s", trigger, outcome.status, outcome.message)
            self._set_state("offline" if outcome.status == "offline" else "error", outcome.message)
        return outcome

    def _capture(self, trigger: str, queue: TriggerQueue | None) -> CaptureOutcome:
        ahead = self._ahead.take()  # this press's frame if it was captured during the last analysis
        analyzer = self._get_analyzer()
        shot = ahead if ahead is not None else take_shot(self.camera)
        if queue is not None and queue.next_kind() == "capture":
            self._ahead.start(self.camera)  # the next press's frame, while this one is analysed
        frame = shot.frame
        placed = self.samples.next_field()
        summary = self.summaries.setdefault(placed.context.sample_id, SampleSummary(placed.context.sample_id))
        analysis = analyzer.analyze(frame.image, um_per_px=self.um_per_px or frame.um_per_px,
                                    sample=placed, history=summary, source=frame.source)
        result = build_result(analysis, device_id=self.device_id, seq=self.seq, sample=placed,
                              model=analyzer.model.info(), extra_timings_ms={"capture": shot.capture_ms})
        self.seq += 1
        publish_start = time.perf_counter()
        with_image = getattr(self.publisher, "publish_with_field_image", None)  # MQTT: the frame goes too
        if with_image is not None:
            with_image(result, frame.image)
        else:
            self.publisher.publish(result)
        publish_ms = 1000.0 * (time.perf_counter() - publish_start)
        if self.overlays_dir is not None:
            self._write_overlay(frame, analysis, result)
        timings = " ".join(f"{k}={v:.0f}ms" for k, v in result["timings_ms"].items())
        log.info("seq %d sample field %d: rbc=%d wbc=%d platelet=%d %s publish=%.0fms", result["seq"],
                 placed.field_index, *result["counts"].values(), timings, publish_ms)
        if not analysis.quality.accepted:
            return CaptureOutcome("rejected", "; ".join(analysis.quality.reasons), trigger, result, analysis, frame)
        return CaptureOutcome("ok", "published", trigger, result, analysis, frame)

    def _write_overlay(self, frame: Frame, analysis: FrameAnalysis, result: dict[str, Any]) -> None:
        """<sample>_f<field>.overlay.png (every cell outlined, counts beside the frame) and
        .gallery.png (each white cell and platelet), named by sample and field."""
        from runtime.contracts.imageio import write_image
        from runtime.analysis.overlay import field_name, render_gallery, render_overlay

        assert self.overlays_dir is not None
        sample = result["sample"]
        name = field_name(sample["sample_id"], sample.get("field_index"))
        title = f"{sample['sample_id']} field {field_number(sample.get('field_index'))}"
        notes = [f"quality: {'; '.join(analysis.quality.reasons) or 'accepted'}",
                 *(f"review: {r['detail']}" for r in result.get("review", {}).get("reasons", []))]
        labels = analysis.frame_labels()  # the grid's labels at the frame's size, drawn after the timed analysis
        write_image(self.overlays_dir / f"{name}.overlay.png",
                    render_overlay(frame.image, labels, analysis.cells, title, notes))
        write_image(self.overlays_dir / f"{name}.gallery.png",
                    render_gallery(frame.image, labels, analysis.cells, title))

    def close(self) -> None:
        self._ahead.close()
        self.camera.close()
        self.publisher.close()
