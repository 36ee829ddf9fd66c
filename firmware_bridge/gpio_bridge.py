"""A button and LEDs wired straight to a Raspberry Pi's GPIO header (libgpiod 2.x, `gpiod`).

No controller board and no serial protocol: a thread samples the button line every
``poll_interval``, debounces it with the same Debouncer the firmware uses, and blinks the
status LED with the same patterns. Behind the same Bridge interface as the serial bridge.

The hardware access is the small GpiodLines class; GpioBridge takes any object with the same
four methods, which keeps the debouncing and LED logic testable without a Pi.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Protocol

from firmware_bridge import wire
from firmware_bridge.api import (
    ACKED,
    CLOSED,
    UNSUPPORTED,
    BridgeUnavailableError,
    ButtonEvent,
    Command,
    GpioSettings,
    check_illumination,
    status_pattern,
    take_event,
)
from firmware_bridge.debounce import PRESS, Debouncer, pattern_level


class Lines(Protocol):
    """The GPIO operations the bridge needs."""

    def button_pressed(self) -> bool: ...

    def set_status_led(self, on: bool) -> None: ...

    def set_illumination(self, on: bool) -> None: ...

    def close(self) -> None: ...


class GpiodLines:
    """The real lines through libgpiod 2.x (`pip install "smearscope[pi]"`)."""

    def __init__(self, settings: GpioSettings) -> None:
        try:
            import gpiod
            from gpiod.line import Bias, Direction, Value
        except ImportError as exc:
            raise BridgeUnavailableError(
                'bridge type "gpio" needs libgpiod\'s Python bindings 2.x: pip install "smearscope[pi]"'
            ) from exc
        self._settings = settings
        self._active, self._inactive = Value.ACTIVE, Value.INACTIVE
        config = {
            settings.button_line: gpiod.LineSettings(
                direction=Direction.INPUT, bias=Bias.PULL_UP if settings.button_active_low else Bias.PULL_DOWN,
                active_low=settings.button_active_low,
            )
        }
        for line in (settings.status_led_line, settings.illumination_line):
            if line is not None:
                config[line] = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.INACTIVE)
        try:
            self._request = gpiod.request_lines(settings.chip, consumer="smearscope", config=config)
        except OSError as exc:
            raise BridgeUnavailableError(f"cannot claim GPIO lines on {settings.chip}: {exc}") from exc

    def button_pressed(self) -> bool:
        return self._request.get_value(self._settings.button_line) == self._active

    def set_status_led(self, on: bool) -> None:
        if self._settings.status_led_line is not None:
            self._request.set_value(self._settings.status_led_line, self._active if on else self._inactive)

    def set_illumination(self, on: bool) -> None:
        if self._settings.illumination_line is not None:
            self._request.set_value(self._settings.illumination_line, self._active if on else self._inactive)

    def close(self) -> None:
        self._request.release()


class GpioBridge:
    """Button and LEDs on GPIO lines; implements firmware_bridge.Bridge."""

    def __init__(self, settings: GpioSettings | None = None, lines: Lines | None = None, autostart: bool = True) -> None:
        """autostart=False leaves sampling to explicit step(now_ms) calls (tests, custom loops)."""
        self.settings = settings or GpioSettings()
        self._lines = lines if lines is not None else GpiodLines(self.settings)
        self._debouncer = Debouncer(round(self.settings.debounce * 1000))
        self._events: queue.Queue[ButtonEvent] = queue.Queue()
        self._pattern = wire.STATUS_PATTERNS["idle"]
        self._illumination = 0
        self._seq = 0
        self._boot_id = int(time.time()) & 0xFFFFFFFF
        self._epoch = time.monotonic()
        self._stop = threading.Event()
        self.io_errors = 0
        self._thread = threading.Thread(target=self._run, name="gpio-bridge", daemon=True)
        if autostart:
            self._thread.start()

    @property
    def connected(self) -> bool:
        """Local lines are always there once claimed; False after close()."""
        return not self._stop.is_set()

    def poll_button(self, timeout: float = 0.0) -> ButtonEvent | None:
        return take_event(self._events, timeout)

    def set_status(self, state: str) -> Command:
        command = Command("status", status_pattern(state))
        self._pattern = command.value
        command.attempts = 1
        command.finish(ACKED if not self._stop.is_set() else CLOSED)
        return command

    def set_illumination(self, level: int) -> Command:
        command = Command("illumination", check_illumination(level))
        if self.settings.illumination_line is None:
            command.finish(UNSUPPORTED, "no illumination_line configured")
            return command
        self._illumination = command.value
        command.attempts = 1
        command.finish(ACKED if not self._stop.is_set() else CLOSED)
        return command

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._lines.set_status_led(False)
        self._lines.set_illumination(False)
        self._lines.close()

    def __enter__(self) -> GpioBridge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.poll_interval):
            try:
                self.step(int((time.monotonic() - self._epoch) * 1000))
            except OSError:
                self.io_errors += 1  # a glitch on one sample must not stop the button

    def step(self, now_ms: int) -> None:
        """One sample: debounce the button, queue an edge, refresh the LEDs."""
        edge = self._debouncer.update(self._lines.button_pressed(), now_ms)
        if edge:
            self._seq = (self._seq + 1) & 0xFFFF
            self._events.put(
                ButtonEvent(
                    action="press" if edge == PRESS else "release",
                    button=0,
                    seq=self._seq,
                    boot_id=self._boot_id,
                    received_at=time.monotonic(),
                )
            )
        self._lines.set_status_led(pattern_level(self._pattern, now_ms))
        self._lines.set_illumination(self._illumination > 0)
