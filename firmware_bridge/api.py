"""The interface the device runtime programs against, and the config that picks a bridge.

See the package docstring (firmware_bridge/__init__.py) for how to use it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

from firmware_bridge import wire

STATUS_STATES = ("idle", "busy", "error", "offline")

ACKED = "acked"
NACKED = "nacked"
FAILED = "failed"
DISCONNECTED = "disconnected"
UNSUPPORTED = "unsupported"
CLOSED = "closed"


class BridgeError(Exception):
    """Base class for firmware-bridge errors a user can act on."""


class BridgeConfigError(BridgeError):
    """A bridge config key or value is invalid; the message names the key."""


class BridgeUnavailableError(BridgeError):
    """The chosen bridge cannot run here (missing package, no such device)."""


@dataclass(frozen=True)
class ButtonEvent:
    """A debounced button change, delivered exactly once per controller event number."""

    action: str  # "press" or "release"
    button: int
    seq: int  # the controller's 16-bit event number (unique within one controller boot)
    boot_id: int  # changes whenever the controller restarts
    received_at: float  # time.monotonic() on the host

    @property
    def is_press(self) -> bool:
        return self.action == "press"


@dataclass(frozen=True)
class ControllerErrorReport:
    """An error the controller reported (event overflow, stuck button, watchdog reset...)."""

    code: int
    name: str
    detail: int
    seq: int
    boot_id: int


@dataclass(frozen=True)
class ControllerInfo:
    """What the controller said in the version handshake."""

    protocol_version: int
    firmware_version: tuple[int, int, int]
    boot_id: int
    heartbeat_ms: int


class Command:
    """An LED or illumination command; wait() blocks until it is acknowledged or given up on.

    outcome is one of: "acked"; "nacked" (the controller refused it, see reason); "failed" (no
    ACK after the retry limit); "disconnected" (no link: the value is re-applied on reconnect);
    "unsupported" (this bridge has no such output); "closed" (the bridge closed first).
    """

    def __init__(self, kind: str, value: int) -> None:
        self.kind = kind
        self.value = value
        self.outcome: str | None = None
        self.reason = ""
        self.attempts = 0
        self._done = threading.Event()

    def finish(self, outcome: str, reason: str = "") -> None:
        if self._done.is_set():
            return
        self.outcome = outcome
        self.reason = reason
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def ok(self) -> bool:
        return self.outcome == ACKED

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the outcome; True only if the controller acknowledged the command."""
        self._done.wait(timeout)
        return self.ok

    def __repr__(self) -> str:
        return f"Command({self.kind}={self.value}, outcome={self.outcome}, attempts={self.attempts})"


@runtime_checkable
class Bridge(Protocol):
    """What the device loop needs from the controller, whichever hardware is behind it."""

    def poll_button(self, timeout: float) -> ButtonEvent | None: ...

    def set_status(self, state: str) -> Command: ...

    def set_illumination(self, level: int) -> Command: ...

    @property
    def connected(self) -> bool: ...

    def close(self) -> None: ...


def status_pattern(state: str) -> int:
    """The protocol's pattern number for a device state; a clear error for an unknown one."""
    if state not in STATUS_STATES:
        raise BridgeConfigError(f"status must be one of {', '.join(STATUS_STATES)}; got {state!r}")
    return wire.STATUS_PATTERNS[state]


def check_illumination(level: int) -> int:
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 255:
        raise BridgeConfigError(f"illumination must be an integer 0..255; got {level!r}")
    return level


@dataclass(frozen=True)
class SerialSettings:
    """Config for type "serial". Times in seconds; defaults come from protocol_constants.json."""

    port: str | None = None  # a path (/dev/ttyACM0, a symlink) or None to search by USB id
    vid: int = wire.CONSTANTS["usb"]["vid"]
    pid: int = wire.CONSTANTS["usb"]["pid"]
    serial_number: str | None = None
    baudrate: int = wire.CONSTANTS["baudrate"]
    ack_timeout: float = wire.TIMING_MS["ack_timeout"] / 1000
    max_retries: int = wire.TIMING_MS["max_retries"]
    heartbeat_interval: float = wire.TIMING_MS["heartbeat_interval"] / 1000
    heartbeat_timeout: float = wire.TIMING_MS["heartbeat_timeout"] / 1000
    reconnect_interval: float = 0.5


@dataclass(frozen=True)
class GpioSettings:
    """Config for type "gpio": a button and LEDs wired to a Raspberry Pi's GPIO header."""

    chip: str = "/dev/gpiochip0"  # a Pi 5 with an older kernel: /dev/gpiochip4
    button_line: int = 17
    button_active_low: bool = True  # button to ground, internal pull-up
    status_led_line: int | None = 27
    illumination_line: int | None = None  # on/off only; None: set_illumination is unsupported
    debounce: float = wire.TIMING_MS["debounce"] / 1000
    poll_interval: float = 0.005


@dataclass(frozen=True)
class SimulatorSettings:
    """Config for type "simulator": the protocol simulator on a pseudo-terminal plus a serial bridge."""

    drop: float = 0.0
    corrupt: float = 0.0
    split: float = 0.0
    merge: float = 0.0
    seed: int | None = None
    serial: dict = field(default_factory=dict)


SETTINGS_BY_TYPE = {"serial": SerialSettings, "gpio": GpioSettings, "simulator": SimulatorSettings}


def parse_settings(config: Mapping[str, Any]) -> tuple[str, Any]:
    """Validate a bridge config mapping: returns (type, settings); unknown keys are errors."""
    if not isinstance(config, Mapping):
        raise BridgeConfigError(f"bridge config must be a mapping; got {type(config).__name__}")
    kind = config.get("type")
    if kind not in SETTINGS_BY_TYPE:
        raise BridgeConfigError(f"bridge.type must be one of {', '.join(SETTINGS_BY_TYPE)}; got {kind!r}")
    cls = SETTINGS_BY_TYPE[kind]
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in config.items():
        if key == "type":
            continue
        if key not in known:
            raise BridgeConfigError(
                f"bridge.{key}: unknown key for type {kind!r} (known: {', '.join(sorted(known))})"
            )
        values[key] = _check_value(f"bridge.{key}", value, cls.__dataclass_fields__[key].default)
    return kind, cls(**values)


def _check_value(path: str, value: Any, default: Any) -> Any:
    """Type-check a config value against its default's type (None defaults accept int or str)."""
    if default is MISSING:  # the only such field is SimulatorSettings.serial, a nested mapping
        if isinstance(value, Mapping):
            parse_settings({"type": "serial", **value})  # report bad nested keys now
            return dict(value)
        raise BridgeConfigError(f"{path}: expected a mapping of serial settings; got {value!r}")
    if default is None or isinstance(default, type(None)):
        if value is None or isinstance(value, (int, str)) and not isinstance(value, bool):
            return value
        raise BridgeConfigError(f"{path}: expected a number, a string or null; got {value!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise BridgeConfigError(f"{path}: expected true or false; got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        raise BridgeConfigError(f"{path}: expected a non-negative number; got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise BridgeConfigError(f"{path}: expected a non-negative integer; got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str) and value:
            return value
        raise BridgeConfigError(f"{path}: expected a non-empty string; got {value!r}")
    return value


def open_bridge(config: Mapping[str, Any]) -> Bridge:
    """Open the bridge a config describes: {"type": "serial" | "gpio" | "simulator", ...}.

    The bridge is started and ready to use; call close() when done (or use it in a with block).
    """
    kind, settings = parse_settings(config)
    if kind == "serial":
        from firmware_bridge.serial_bridge import SerialBridge

        return SerialBridge(settings)
    if kind == "gpio":
        from firmware_bridge.gpio_bridge import GpioBridge

        return GpioBridge(settings)
    from firmware_bridge.simulator import open_simulated_bridge

    return open_simulated_bridge(settings)


def take_event(events: "queue.Queue[ButtonEvent]", timeout: float) -> ButtonEvent | None:
    """The next queued button event, waiting up to `timeout` seconds (0: don't wait); None if none.

    Shared by every Bridge implementation so `poll_button` means the same thing for all of them.
    """
    try:
        return events.get(timeout=timeout) if timeout > 0 else events.get_nowait()
    except queue.Empty:
        return None
