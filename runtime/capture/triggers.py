"""Capture triggers and the device's status, decoupled by a queue so no press is ever lost.

Trigger sources (the keyboard, a fixed interval, the microscope controller's button, later the
server's capture command) run in their own threads and only put events on a TriggerQueue. The
device loop takes events one at a time, in order; a press that arrives while a field is being
analysed waits in the queue and is handled next (its frame may be captured while that analysis runs,
see runtime.device.ahead). The loop reports its state (idle, busy, error, offline)
to StatusIndicators: a log line, the controller's status LED.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TextIO

from runtime.contracts.config import (
    BridgeTriggerConfig,
    IntervalTriggerConfig,
    StdinTriggerConfig,
    TriggerConfig,
)
from runtime.contracts.errors import ConfigError

log = logging.getLogger(__name__)

DeviceState = Literal["idle", "busy", "error", "offline"]
EventKind = Literal["capture", "quit", "sample"]


@dataclass(frozen=True)
class TriggerEvent:
    """A request to the device loop: capture a frame, switch sample, or stop."""

    kind: EventKind
    source: str
    at: float = field(default_factory=time.time)
    payload: dict[str, Any] | None = None


class TriggerQueue:
    """Thread-safe FIFO of trigger events; unbounded, so a burst of presses is kept in order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[TriggerEvent] = queue.Queue()
        self._lock = threading.Lock()
        self.received = 0  # capture requests ever queued (sources put from several threads)

    def put(self, event: TriggerEvent) -> None:
        with self._lock:
            self.received += event.kind == "capture"
        self._queue.put(event)

    def capture(self, source: str) -> None:
        self.put(TriggerEvent("capture", source))

    def quit(self, source: str) -> None:
        self.put(TriggerEvent("quit", source))

    def get(self, timeout: float | None = None) -> TriggerEvent | None:
        """The next event, or None after `timeout` seconds without one."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def next_kind(self) -> EventKind | None:
        """The kind of the event `get` would return now, without taking it. Sources only add behind
        it, so for the queue's one consumer (the device loop) the answer stays true until its next get."""
        with self._queue.mutex:
            return self._queue.queue[0].kind if self._queue.queue else None

    def pending(self) -> int:
        return self._queue.qsize()


class TriggerSource(Protocol):
    """Something that puts events on the queue from its own thread."""

    def start(self, events: TriggerQueue) -> None: ...

    def stop(self) -> None: ...


class StatusIndicator(Protocol):
    """Shows the device's state to the operator (LED, display, log)."""

    def set_state(self, state: DeviceState, detail: str = "") -> None: ...


class LogStatus:
    """Logs state changes: errors and drop-outs as warnings, recovery as info, busy/idle as debug."""

    def __init__(self) -> None:
        self.state: DeviceState | None = None

    def set_state(self, state: DeviceState, detail: str = "") -> None:
        if state in ("error", "offline"):
            level = logging.WARNING
        elif self.state in ("error", "offline", None):
            level = logging.INFO
        else:
            level = logging.DEBUG
        if state != self.state or detail:
            log.log(level, "status %s%s", state, f": {detail}" if detail else "")
        self.state = state


class RecordingStatus:
    """Keeps every state it is given, e.g. for a display that shows the history, or for tests."""

    def __init__(self) -> None:
        self.history: list[tuple[DeviceState, str]] = []
        self._lock = threading.Lock()

    def set_state(self, state: DeviceState, detail: str = "") -> None:
        with self._lock:
            self.history.append((state, detail))

    @property
    def states(self) -> list[DeviceState]:
        with self._lock:
            return [s for s, _ in self.history]


class StdinTrigger:
    """Keyboard: Enter captures; `sample ID [PATIENT]` switches sample; `q` (or end of input) quits."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._thread: threading.Thread | None = None

    def start(self, events: TriggerQueue) -> None:
        self._thread = threading.Thread(target=self._read, args=(events,), name="stdin-trigger", daemon=True)
        self._thread.start()

    def _read(self, events: TriggerQueue) -> None:
        stream = self.stream or sys.stdin
        for line in stream:
            words = line.split()
            if not words or words[0].lower() in ("c", "capture"):
                events.capture("keyboard")
            elif words[0].lower() in ("q", "quit", "exit"):
                break
            elif words[0].lower() == "sample" and len(words) >= 2:
                events.put(TriggerEvent("sample", "keyboard",
                                        payload={"sample_id": words[1], "patient_id": words[2] if len(words) > 2 else None}))
            else:
                log.warning("keyboard: unknown command %r (Enter captures, 'sample ID [PATIENT]', 'q' quits)", line.strip())
        events.quit("keyboard")

    def stop(self) -> None:
        pass  # a thread blocked on stdin cannot be interrupted; it is a daemon and ends with the process


class IntervalTrigger:
    """A capture every `seconds`; after `count` captures (0: never) it asks the loop to stop."""

    def __init__(self, seconds: float, count: int = 0) -> None:
        self.seconds, self.count = seconds, count
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, events: TriggerQueue) -> None:
        self._thread = threading.Thread(target=self._tick, args=(events,), name="interval-trigger", daemon=True)
        self._thread.start()

    def _tick(self, events: TriggerQueue) -> None:
        fired = 0
        while not self._stop.wait(self.seconds if fired else 0.0):
            events.capture("interval")
            fired += 1
            if self.count and fired >= self.count:
                events.quit("interval")
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


class ManualTrigger:
    """Presses from code (a button widget, a scripted demo): `press()` queues a capture."""

    def __init__(self, name: str = "manual") -> None:
        self.name = name
        self._events: TriggerQueue | None = None

    def start(self, events: TriggerQueue) -> None:
        self._events = events

    def press(self) -> None:
        if self._events is None:
            raise RuntimeError("ManualTrigger.press() before the device started")
        self._events.capture(self.name)

    def stop(self) -> None:
        self._events = None


def make_trigger(config: TriggerConfig) -> tuple[TriggerSource, list[StatusIndicator]]:
    """The trigger the config's `type` names, and the status indicators that come with it (an LED)."""
    if isinstance(config, StdinTriggerConfig):
        return StdinTrigger(), []
    if isinstance(config, IntervalTriggerConfig):
        return IntervalTrigger(config.seconds, config.count), []
    if isinstance(config, BridgeTriggerConfig):
        from runtime.capture.bridge_trigger import make_bridge_trigger

        return make_bridge_trigger(config)
    raise ConfigError(f"trigger.type: unsupported {type(config).__name__}")

