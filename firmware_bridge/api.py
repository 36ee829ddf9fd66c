"""The interface the device runtime programs against, and the config that picks a bridge.

See the package docstring (firmware_bridge/__init__.py) for how to use it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, Union, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

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


class _Settings(BaseModel):
    """A bridge config section: unknown keys refused, strict types, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


_Seconds = Annotated[float, Field(gt=0, le=60)]
"""Timeouts and intervals: zero would busy-loop the bridge's thread, a minute is already sluggish."""
_Line = Annotated[int, Field(ge=0, le=1023)]
_UsbId = Annotated[int, Field(ge=0, le=0xFFFF)]
_Probability = Annotated[float, Field(ge=0, le=1)]


class SerialSettings(_Settings):
    """Config for type "serial". Times in seconds; defaults come from protocol_constants.json."""

    type: Literal["serial"] = "serial"
    port: Annotated[str, Field(min_length=1)] | None = None  # a path (/dev/ttyACM0, a symlink) or None: search by USB id
    vid: _UsbId = wire.CONSTANTS["usb"]["vid"]
    pid: _UsbId = wire.CONSTANTS["usb"]["pid"]
    serial_number: Annotated[str, Field(min_length=1)] | None = None
    baudrate: Annotated[int, Field(ge=300, le=4_000_000)] = wire.CONSTANTS["baudrate"]
    ack_timeout: _Seconds = wire.TIMING_MS["ack_timeout"] / 1000
    max_retries: Annotated[int, Field(ge=0, le=100)] = wire.TIMING_MS["max_retries"]
    heartbeat_interval: _Seconds = wire.TIMING_MS["heartbeat_interval"] / 1000
    heartbeat_timeout: _Seconds = wire.TIMING_MS["heartbeat_timeout"] / 1000
    reconnect_interval: _Seconds = 0.5


class GpioSettings(_Settings):
    """Config for type "gpio": a button and LEDs wired to a Raspberry Pi's GPIO header."""

    type: Literal["gpio"] = "gpio"
    chip: Annotated[str, Field(min_length=1)] = "/dev/gpiochip0"  # a Pi 5 with an older kernel: /dev/gpiochip4
    button_line: _Line = 17
    button_active_low: bool = True  # button to ground, internal pull-up
    status_led_line: _Line | None = 27
    illumination_line: _Line | None = None  # on/off only; None: set_illumination is unsupported
    debounce: Annotated[float, Field(ge=0, le=1)] = wire.TIMING_MS["debounce"] / 1000
    poll_interval: Annotated[float, Field(gt=0, le=1)] = 0.005


class SimulatorSettings(_Settings):
    """Config for type "simulator": the protocol simulator on a pseudo-terminal plus a serial bridge.

    `serial` holds serial settings for the bridge's side (its port is the simulator's).
    """

    type: Literal["simulator"] = "simulator"
    drop: _Probability = 0.0
    corrupt: _Probability = 0.0
    split: _Probability = 0.0
    merge: _Probability = 0.0
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    serial: SerialSettings = Field(default_factory=SerialSettings)


BridgeSettings = Annotated[Union[SerialSettings, GpioSettings, SimulatorSettings], Field(discriminator="type")]
"""The bridge section of a config, chosen by its `type`; a device config embeds it as `trigger.bridge`."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(BridgeSettings)
SETTINGS_BY_TYPE = {"serial": SerialSettings, "gpio": GpioSettings, "simulator": SimulatorSettings}


def parse_settings(config: Mapping[str, Any] | _Settings) -> tuple[str, Any]:
    """Validate a bridge config mapping: returns (type, settings); unknown keys and bad values are
    a BridgeConfigError naming the key (``bridge.ack_timeout: ...``)."""
    if isinstance(config, _Settings):
        return config.type, config  # type: ignore[attr-defined]
    if not isinstance(config, Mapping):
        raise BridgeConfigError(f"bridge config must be a mapping; got {type(config).__name__}")
    try:
        settings = _ADAPTER.validate_python(dict(config))
    except ValidationError as exc:
        raise BridgeConfigError(_one_line(exc)) from None
    return settings.type, settings


def _one_line(exc: ValidationError) -> str:
    """The first problem as `bridge.KEY: message` (this package imports nothing of the project's)."""
    errors = exc.errors(include_url=False)
    error = errors[0]
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return f"bridge.type must be one of {', '.join(SETTINGS_BY_TYPE)}; got {error['input'].get('type')!r}"
    path = ".".join(str(p) for p in error["loc"][1:])  # loc[0] is the type tag
    kind, bound = error["type"], next(iter((error.get("ctx") or {}).values()), None)
    bound = f"{bound:g}" if isinstance(bound, float) else bound
    message = _WORDS.get(kind) or (f"must be {_SIGNS[kind]} {bound}" if kind in _SIGNS else error["msg"].lower())
    value = repr(error["input"])
    value = value if len(value) <= 40 else value[:37] + "..."
    tail = "" if kind in ("extra_forbidden", "missing") else f"; got {value}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"bridge.{path}: {message}{tail}{more}"


_WORDS = {"extra_forbidden": "unknown key", "missing": "required key is missing", "float_type": "expected a number",
          "int_type": "expected an integer", "bool_type": "expected true or false", "string_type": "expected text",
          "model_type": "expected a mapping", "string_too_short": "must not be empty"}
_SIGNS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def open_bridge(config: Mapping[str, Any] | _Settings) -> Bridge:
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
