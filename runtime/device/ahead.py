"""Capture ahead: while the loop analyses one field, the next queued press's frame is captured.

A camera is used by one thread at a time. A capture ahead starts only after the loop's own capture
of the current field has returned, and the loop waits for it (`take`) before the camera is used for
anything else, so at most one capture is in flight and at most one frame waits. A capture ahead
that fails keeps its exception, which `take` raises for the press the frame belonged to.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from runtime.capture.cameras import Camera, Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shot:
    """A captured frame and how long the camera took to deliver it."""

    frame: Frame
    capture_ms: float


def take_shot(camera: Camera) -> Shot:
    """One capture, timed; the camera's own exceptions pass through."""
    start = time.perf_counter()
    frame = camera.capture()
    return Shot(frame, round(1000.0 * (time.perf_counter() - start), 3))


class CaptureAhead:
    """At most one capture running on a worker thread, taken by the press it was started for."""

    def __init__(self) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture-ahead")
        self._pending: Future[Shot] | None = None

    def start(self, camera: Camera) -> None:
        """Capture the next field now, beside the analysis of the current one."""
        if self._pending is not None:
            raise RuntimeError("a field is already being captured ahead")
        self._pending = self._worker.submit(take_shot, camera)

    def take(self) -> Shot | None:
        """The field captured ahead, once its capture has finished (None when there is none);
        a capture that failed raises its exception here, for the press it belongs to."""
        pending, self._pending = self._pending, None
        return pending.result() if pending is not None else None

    def drop(self) -> None:
        """Waits for a capture in flight and discards it: the loop ends without analysing it
        (only when it is interrupted; a quit event is handled after the press it belongs to)."""
        try:
            if self.take() is not None:
                log.warning("a field captured ahead was discarded: the loop ended before its analysis")
        except Exception as exc:  # its press is not going to be answered either way
            log.warning("a capture ahead failed as the loop ended: %s", exc)

    def close(self) -> None:
        self.drop()
        self._worker.shutdown(wait=True)
