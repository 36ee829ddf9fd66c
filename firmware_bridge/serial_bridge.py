"""Host side of the serial protocol (pyserial): connect, handshake, heartbeat, events, commands.

One worker thread owns the port. It finds the port (a path, or a USB VID/PID), opens it,
performs the version handshake, sends heartbeats, declares the link lost when the controller
falls silent for ``heartbeat_timeout`` or the port errors (USB unplug), and reconnects.

Button presses reach ``poll_button`` exactly once: every controller event carries a 16-bit
event number; the host ACKs every copy it receives but delivers only numbers newer than the
last one it delivered for that controller boot (boot_id from the handshake). The record
survives reconnects, so a retransmission after an unplug is recognised; a new boot_id (the
controller restarted) starts a fresh record.

Commands (status LED, illumination) go one at a time: sent, retransmitted after
``ack_timeout`` up to ``max_retries`` times, then reported as failed. The last requested
status and illumination are re-sent after every reconnect.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

from firmware_bridge import wire
from firmware_bridge.api import (
    ACKED,
    CLOSED,
    DISCONNECTED,
    FAILED,
    NACKED,
    BridgeUnavailableError,
    ButtonEvent,
    Command,
    ControllerErrorReport,
    ControllerInfo,
    SerialSettings,
    check_illumination,
    status_pattern,
    take_event,
)

log = logging.getLogger(__name__)

ACTION_NAMES = {number: name for name, number in wire.BUTTON_ACTIONS.items()}
ERROR_NAMES = {number: name for name, number in wire.ERROR_CODES.items()}
NACK_NAMES = {number: name for name, number in wire.NACK_REASONS.items()}


@dataclass
class LinkStats:
    """Counters that show what the link went through."""

    connects: int = 0
    disconnects: int = 0
    heartbeat_losses: int = 0
    frames_received: int = 0
    bad_frames: int = 0
    events_delivered: int = 0
    duplicate_events: int = 0
    retransmissions: int = 0
    commands_failed: int = 0


def find_port(settings: SerialSettings) -> str:
    """The port path to open: the configured path, or the first port with the configured USB id."""
    if settings.port:
        return settings.port
    from serial.tools import list_ports

    matches = sorted(
        (
            p
            for p in list_ports.comports()
            if p.vid == settings.vid
            and p.pid == settings.pid
            and (settings.serial_number is None or p.serial_number == settings.serial_number)
        ),
        key=lambda p: p.device,
    )
    if not matches:
        raise BridgeUnavailableError(
            f"no serial port with USB id {settings.vid:04x}:{settings.pid:04x}"
            + (f" and serial number {settings.serial_number}" if settings.serial_number else "")
        )
    return matches[0].device


class SerialBridge:
    """The controller board over a serial port; implements firmware_bridge.Bridge."""

    def __init__(self, settings: SerialSettings | None = None, **overrides) -> None:
        import serial  # pyserial; imported here so that `import firmware_bridge` stays light

        self._serial_module = serial
        base = settings or SerialSettings()
        self.settings = SerialSettings(**{**base.__dict__, **overrides}) if overrides else base
        self.stats = LinkStats()
        self.info: ControllerInfo | None = None
        self.errors: deque[ControllerErrorReport] = deque(maxlen=100)
        self.last_problem = ""

        self._events: queue.Queue[ButtonEvent] = queue.Queue()
        self._commands: deque[Command] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._desired: dict[str, int] = {}

        self._port = None
        self._decoder = wire.FrameDecoder()
        self._tx_seq = 0
        self._hello_seq: int | None = None
        self._hello_attempts = 0
        self._inflight: Command | None = None
        self._inflight_seq = 0
        self._due = 0.0
        self._last_rx = 0.0
        self._next_heartbeat = 0.0
        self._delivered: tuple[int, int] | None = None  # (boot_id, last delivered event number)

        self._thread = threading.Thread(target=self._run, name="serial-bridge", daemon=True)
        self._thread.start()

    # ----- public API -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the handshake is done and the controller's heartbeat is arriving."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def poll_button(self, timeout: float = 0.0) -> ButtonEvent | None:
        """The next button event, waiting up to timeout seconds; None if there is none."""
        return take_event(self._events, timeout)

    def set_status(self, state: str) -> Command:
        """Show a device state ('idle', 'busy', 'error', 'offline') on the status LED."""
        return self._submit("status", status_pattern(state))

    def set_illumination(self, level: int) -> Command:
        """Set the illumination LED, 0 (off) to 255 (full)."""
        return self._submit("illumination", check_illumination(level))

    def close(self) -> None:
        """Tell the controller the host is going (status offline), then stop and close the port."""
        if self._stop.is_set():
            return
        if self.connected:
            self.set_status("offline").wait(self.settings.ack_timeout * (self.settings.max_retries + 1) + 0.5)
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            pending = list(self._commands)
            self._commands.clear()
        for command in pending:
            command.finish(CLOSED)
        if self._inflight is not None:
            self._inflight.finish(CLOSED)

    def __enter__(self) -> SerialBridge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- worker ---------------------------------------------------------------------------

    def _submit(self, kind: str, value: int) -> Command:
        command = Command(kind, value)
        with self._lock:
            self._desired[kind] = value
            if self._stop.is_set():
                command.finish(CLOSED)
            elif not self.connected:
                command.finish(DISCONNECTED, "no link; re-applied on reconnect")
            else:
                self._commands.append(command)
        return command

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._port is None:
                if not self._open():
                    self._stop.wait(self.settings.reconnect_interval)
                continue
            try:
                self._step()
            except (OSError, self._serial_module.SerialException) as exc:
                self._drop_link(f"port error: {exc}")
            except Exception as exc:  # a bug must not silence the button for good: log, reconnect
                log.exception("serial bridge worker error")
                self._drop_link(f"internal error: {exc!r}")
        self._close_port()

    def _open(self) -> bool:
        try:
            path = find_port(self.settings)
            port = self._serial_module.Serial(path, self.settings.baudrate, timeout=0.01, exclusive=True)
            port.reset_input_buffer()
            port.write(b"\x00")  # ends any partial frame the controller is holding
        except (OSError, BridgeUnavailableError, self._serial_module.SerialException) as exc:
            self.last_problem = str(exc)
            return False
        self._port = port
        self._decoder = wire.FrameDecoder()
        now = time.monotonic()
        self._last_rx = now
        self._hello_attempts = 0
        self._send_hello(now)
        return True

    def _step(self) -> None:
        port = self._port
        data = port.read(max(1, port.in_waiting))
        now = time.monotonic()
        if data:
            bad_before = self._decoder.bad_frames
            for frame in self._decoder.feed(data):
                self.stats.frames_received += 1
                self._last_rx = now
                self._handle(frame, now)
                if self._port is None:  # the frame ended the link (refused handshake)
                    return
            if self._decoder.bad_frames != bad_before:
                self.stats.bad_frames += self._decoder.bad_frames - bad_before
                self._send(wire.NACK, 0, wire.nack_payload(0, wire.NACK_REASONS["BAD_CRC"]))
        if now - self._last_rx > self.settings.heartbeat_timeout:
            self.stats.heartbeat_losses += 1
            self._drop_link("heartbeat lost")
            return
        if not self.connected:
            if self._hello_seq is not None and now >= self._due:
                if self._hello_attempts > self.settings.max_retries:
                    self._drop_link("no answer to the version handshake")
                    return
                self._send_hello(now)
            return
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.settings.heartbeat_interval
            self._send(wire.HEARTBEAT, 0, b"")
        self._pump_command(now)

    def _pump_command(self, now: float) -> None:
        command = self._inflight
        if command is None:
            with self._lock:
                if not self._commands:
                    return
                command = self._commands.popleft()
            self._inflight = command
            self._inflight_seq = self._next_seq()
        elif now < self._due:
            return
        elif command.attempts > self.settings.max_retries:
            self._inflight = None
            self.stats.commands_failed += 1
            command.finish(FAILED, f"no ACK after {command.attempts} attempts")
            log.warning("controller did not acknowledge %s=%s after %d attempts", command.kind, command.value, command.attempts)
            return
        else:
            self.stats.retransmissions += 1
        msg_type = wire.SET_STATUS if command.kind == "status" else wire.SET_ILLUMINATION
        command.attempts += 1
        self._due = now + self.settings.ack_timeout
        self._send(msg_type, self._inflight_seq, bytes([command.value]))

    def _handle(self, frame: wire.Frame, now: float) -> None:
        msg_type, payload = frame.msg_type, frame.payload
        if not wire.payload_length_ok(msg_type, payload):
            return
        if msg_type == wire.VERSION:
            self._on_version(payload, now)
        elif msg_type == wire.HEARTBEAT:
            if len(payload) == 5 and self.info is not None and wire.read_u32(payload, 0) != self.info.boot_id:
                log.info("controller restarted (new boot id); repeating the handshake")
                self._connected.clear()
                self._hello_attempts = 0
                self._send_hello(now)
        elif msg_type in (wire.BUTTON, wire.ERROR):
            if self.connected:  # unacknowledged events before the handshake are sent again later
                self._send(wire.ACK, 0, wire.ack_payload(frame.seq))
                self._on_event(msg_type, payload, now)
        elif msg_type == wire.ACK:
            if self._inflight is not None and payload[0] == self._inflight_seq:
                command, self._inflight = self._inflight, None
                command.finish(ACKED)
        elif msg_type == wire.NACK:
            self._on_nack(payload, now)

    def _on_version(self, payload: bytes, now: float) -> None:
        if self._hello_seq is None or payload[0] != self._hello_seq:
            return
        self._hello_seq = None
        info = ControllerInfo(
            protocol_version=payload[1],
            firmware_version=(payload[2], payload[3], payload[4]),
            boot_id=wire.read_u32(payload, 5),
            heartbeat_ms=wire.read_u16(payload, 9),
        )
        if info.protocol_version != wire.PROTOCOL_VERSION:
            self._drop_link(f"controller speaks protocol {info.protocol_version}, host {wire.PROTOCOL_VERSION}")
            return
        if self._delivered is not None and self._delivered[0] != info.boot_id:
            self._delivered = None  # the controller restarted: its event numbers start again
        self.info = info
        self.stats.connects += 1
        self._next_heartbeat = now
        with self._lock:
            restore = [Command(kind, value) for kind, value in self._desired.items()]
            self._commands.extendleft(reversed(restore))
            self._connected.set()
        log.info(
            "controller connected: firmware %s, protocol %d, boot %08x",
            ".".join(map(str, info.firmware_version)),
            info.protocol_version,
            info.boot_id,
        )

    def _on_event(self, msg_type: int, payload: bytes, now: float) -> None:
        boot_id = self.info.boot_id
        number = wire.read_u16(payload, 0)
        if self._delivered is not None and not wire.serial_newer(number, self._delivered[1]):
            self.stats.duplicate_events += 1
            return
        self._delivered = (boot_id, number)
        if msg_type == wire.BUTTON:
            action = ACTION_NAMES.get(payload[3], f"unknown-{payload[3]}")
            self.stats.events_delivered += 1
            self._events.put(ButtonEvent(action=action, button=payload[2], seq=number, boot_id=boot_id, received_at=now))
        else:
            code = payload[2]
            report = ControllerErrorReport(
                code=code, name=ERROR_NAMES.get(code, f"code-{code}"), detail=wire.read_u16(payload, 3), seq=number, boot_id=boot_id
            )
            self.errors.append(report)
            log.warning("controller reported %s (detail %d)", report.name, report.detail)

    def _on_nack(self, payload: bytes, now: float) -> None:
        seq, reason = payload[0], payload[1]
        if reason == wire.NACK_REASONS["BAD_CRC"]:
            self._due = now  # the controller saw a damaged frame: resend what is in flight now
            return
        if self._hello_seq is not None and seq == self._hello_seq:
            self._drop_link(f"controller refused the handshake: {NACK_NAMES.get(reason, reason)}")
            return
        if self._inflight is not None and seq == self._inflight_seq:
            command, self._inflight = self._inflight, None
            command.finish(NACKED, NACK_NAMES.get(reason, f"reason {reason}"))

    def _send_hello(self, now: float) -> None:
        if self._hello_seq is None or self._hello_attempts == 0:
            self._hello_seq = self._next_seq()
        self._hello_attempts += 1
        self._due = now + self.settings.ack_timeout
        self._send(wire.HELLO, self._hello_seq, wire.hello_payload())

    def _next_seq(self) -> int:
        self._tx_seq = (self._tx_seq + 1) & 0xFF
        return self._tx_seq

    def _send(self, msg_type: int, seq: int, payload: bytes) -> None:
        if self._port is not None:
            self._port.write(wire.encode_frame(msg_type, seq, payload))

    def _drop_link(self, reason: str) -> None:
        """Forget the connection (not the delivered-event record) and reopen later."""
        was_connected = self.connected
        self._connected.clear()
        self.last_problem = reason
        self._hello_seq = None
        if was_connected:
            self.stats.disconnects += 1
            log.warning("controller link lost: %s", reason)
        if self._inflight is not None:
            self._inflight.finish(DISCONNECTED, reason)
            self._inflight = None
        with self._lock:
            pending = list(self._commands)
            self._commands.clear()
        for command in pending:
            command.finish(DISCONNECTED, reason)
        self._close_port()

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (OSError, self._serial_module.SerialException):
                pass
