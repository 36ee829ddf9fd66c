"""The microscope controller (firmware_bridge) as a trigger source and a status indicator.

Button presses become capture events on the device's queue; the device's state drives the
controller's status LED. The bridge delivers each press exactly once and never raises from its
own thread, so this adapter only moves events across.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from runtime.contracts.config import BridgeTriggerConfig
from runtime.contracts.errors import ConfigError
from runtime.capture.triggers import DeviceState, StatusIndicator, TriggerQueue

log = logging.getLogger(__name__)


class BridgeTrigger:
    """Polls the bridge for button events in a thread; each press queues one capture."""

    def __init__(self, bridge: Any, poll_s: float = 0.1) -> None:
        self.bridge = bridge
        self.poll_s = poll_s
        self.presses = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, events: TriggerQueue) -> None:
        self._thread = threading.Thread(target=self._poll, args=(events,), name="bridge-trigger", daemon=True)
        self._thread.start()

    def _poll(self, events: TriggerQueue) -> None:
        while not self._stop.is_set():
            try:
                event = self.bridge.poll_button(self.poll_s)
            except Exception:  # the bridge should not raise; if it does, keep the button alive
                log.exception("button poll failed")
                self._stop.wait(self.poll_s)
                continue
            if event is not None and event.is_press:
                self.presses += 1
                events.capture("button")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.bridge.close()


class BridgeStatus:
    """Shows the device state on the controller's status LED (non-blocking; re-sent on reconnect)."""

    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge

    def set_state(self, state: DeviceState, detail: str = "") -> None:
        self.bridge.set_status(state)


def open_configured_bridge(config: BridgeTriggerConfig) -> Any:
    """Open the bridge the config describes; hardware that is missing is a ConfigError."""
    from firmware_bridge import BridgeError, open_bridge

    try:
        return open_bridge(config.bridge)
    except BridgeError as exc:
        raise ConfigError(f"trigger.bridge: {exc}") from exc


def make_bridge_trigger(config: BridgeTriggerConfig) -> tuple[BridgeTrigger, list[StatusIndicator]]:
    bridge = open_configured_bridge(config)
    return BridgeTrigger(bridge), [BridgeStatus(bridge)]
