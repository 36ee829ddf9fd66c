"""The microscope controller's side of the protocol, as a pure state machine.

The same class runs in the Pico firmware (firmware/main.py feeds it USB bytes, contact levels
and a millisecond clock) and in the host-side simulator (which feeds it a pseudo-terminal), so
the tests exercise the firmware's own protocol logic. No I/O and no clock here: every call
takes ``now_ms`` from a monotonic millisecond counter that the caller keeps.

Delivery of controller events (BUTTON, ERROR): each event gets the next 16-bit event number
and waits in a bounded queue; the head is sent as a reliable frame and retransmitted with the
same frame seq and event number until the host ACKs it (retry interval doubling up to
``event_retry_max``). Events are only sent while a host is present (a HELLO was answered and a
frame arrived within the heartbeat timeout), so presses made while the host is away are kept
and delivered when it comes back.

MicroPython subset only (see wire.py).
"""

try:
    from firmware_bridge import wire
    from firmware_bridge.debounce import PRESS, RELEASE, Debouncer
except ImportError:  # flat filesystem on the controller board
    import wire
    from debounce import PRESS, RELEASE, Debouncer

CONTROLLER_VERSION = (1, 0, 0)

PATTERN_OFFLINE = wire.STATUS_PATTERNS["offline"]
PATTERN_IDLE = wire.STATUS_PATTERNS["idle"]


CONTROLLER_OPTIONS = ("heartbeat_ms", "host_timeout_ms", "retry_ms", "retry_max_ms", "queue_limit", "debounce_ms",
                      "stuck_ms")


class Controller:
    """Protocol engine of the controller board; see the module docstring."""

    def __init__(self, boot_id, firmware=CONTROLLER_VERSION, options=None):
        """`options` overrides protocol_constants.json for tests and the simulator (a dict, as
        MicroPython has no dataclasses): heartbeat_ms, host_timeout_ms, retry_ms, retry_max_ms,
        queue_limit, debounce_ms, stuck_ms."""
        timing = wire.TIMING_MS
        given = dict(options or {})
        unknown = [key for key in given if key not in CONTROLLER_OPTIONS]
        if unknown:
            raise ValueError("unknown controller option(s): " + ", ".join(unknown))

        def option(key, default):
            value = given.get(key)
            return default if value is None else value

        self.boot_id = boot_id & 0xFFFFFFFF
        self.firmware = firmware
        self.heartbeat_ms = option("heartbeat_ms", timing["heartbeat_interval"])
        self.host_timeout_ms = option("host_timeout_ms", timing["heartbeat_timeout"])
        self.retry_ms = option("retry_ms", timing["ack_timeout"])
        self.retry_max_ms = option("retry_max_ms", timing["event_retry_max"])
        self.queue_limit = option("queue_limit", wire.CONSTANTS["event_queue_limit"])
        self.stuck_ms = option("stuck_ms", timing["button_stuck"])
        self.debouncer = Debouncer(given.get("debounce_ms"))
        self.decoder = wire.FrameDecoder()

        self.status_pattern = PATTERN_IDLE  # last pattern the host asked for
        self.illumination = 0
        self.host_ready = False
        self.last_rx_ms = None
        self._next_heartbeat_ms = 0
        self._out = bytearray()

        self._tx_seq = 0
        self._event_seq = 0
        self._queue = []  # [(msg_type, payload)] ; the head may be in flight
        self._inflight_seq = None
        self._inflight_due_ms = 0
        self._inflight_interval_ms = self.retry_ms
        self._dropped_events = 0
        self._pressed_since_ms = None
        self._stuck_reported = False

        # Counters for diagnostics and tests.
        self.commands_applied = 0
        self.frames_received = 0
        self.retransmissions = 0
        self.events_queued = 0

    # ----- inputs -------------------------------------------------------------------------

    def sample_button(self, raw_pressed, now_ms, button=0):
        """Feed one raw contact sample; debounced edges become BUTTON events."""
        edge = self.debouncer.update(raw_pressed, now_ms)
        if edge == PRESS:
            self._pressed_since_ms = now_ms
            self._stuck_reported = False
            self.queue_button(button, wire.BUTTON_ACTIONS["press"])
        elif edge == RELEASE:
            self._pressed_since_ms = None
            self.queue_button(button, wire.BUTTON_ACTIONS["release"])
        elif (
            self._pressed_since_ms is not None
            and not self._stuck_reported
            and now_ms - self._pressed_since_ms >= self.stuck_ms
        ):
            self._stuck_reported = True
            self.report_error(wire.ERROR_CODES["BUTTON_STUCK"], 0)

    def queue_button(self, button, action):
        """Queue a debounced press or release for reliable delivery."""
        self._queue_event(wire.BUTTON, button, action)

    def report_error(self, code, detail):
        """Queue an error report for reliable delivery."""
        self._queue_event(wire.ERROR, code, detail)

    def feed(self, data, now_ms):
        """Consume bytes received from the host."""
        before = self.decoder.bad_frames
        for frame in self.decoder.feed(data):
            self.frames_received += 1
            self.last_rx_ms = now_ms
            self._handle(frame, now_ms)
        if self.decoder.bad_frames != before:
            # The seq of a damaged frame is unknown; the host retransmits what it has in flight.
            self._send(wire.NACK, 0, wire.nack_payload(0, wire.NACK_REASONS["BAD_CRC"]))

    # ----- outputs ------------------------------------------------------------------------

    def poll(self, now_ms):
        """Run timers (heartbeat, host timeout, retransmission); return bytes to transmit."""
        if self.host_ready and (self.last_rx_ms is None or now_ms - self.last_rx_ms > self.host_timeout_ms):
            self.host_ready = False
        if now_ms >= self._next_heartbeat_ms:
            self._next_heartbeat_ms = now_ms + self.heartbeat_ms
            self._send(wire.HEARTBEAT, 0, wire.controller_heartbeat_payload(self.boot_id, len(self._queue)))
        if self._dropped_events and len(self._queue) < self.queue_limit:
            dropped = self._dropped_events
            self._dropped_events = 0
            self._queue_event(wire.ERROR, wire.ERROR_CODES["EVENT_OVERFLOW"], dropped)
        self._pump_events(now_ms)
        out = bytes(self._out)
        self._out = bytearray()
        return out

    def effective_pattern(self):
        """The status pattern to show: the host's choice, or offline while no host is present."""
        return self.status_pattern if self.host_ready else PATTERN_OFFLINE

    def pending_events(self):
        return len(self._queue)

    # ----- internals ----------------------------------------------------------------------

    def _queue_event(self, msg_type, first, second):
        """Number and queue a BUTTON (button, action) or ERROR (code, detail) event."""
        if len(self._queue) >= self.queue_limit:
            self._dropped_events += 1
            return
        self._event_seq = (self._event_seq + 1) & 0xFFFF
        if msg_type == wire.BUTTON:
            payload = wire.button_payload(self._event_seq, first, second)
        else:
            payload = wire.error_payload(self._event_seq, first, second)
        self._queue.append((msg_type, payload))
        self.events_queued += 1

    def _pump_events(self, now_ms):
        if not self.host_ready or not self._queue:
            return
        msg_type, payload = self._queue[0]
        if self._inflight_seq is None:
            self._tx_seq = (self._tx_seq + 1) & 0xFF
            self._inflight_seq = self._tx_seq
            self._inflight_interval_ms = self.retry_ms
        elif now_ms < self._inflight_due_ms:
            return
        else:
            self.retransmissions += 1
            self._inflight_interval_ms = min(self._inflight_interval_ms * 2, self.retry_max_ms)
        self._inflight_due_ms = now_ms + self._inflight_interval_ms
        self._send(msg_type, self._inflight_seq, payload)

    def _send(self, msg_type, seq, payload):
        self._out.extend(wire.encode_frame(msg_type, seq, payload))

    def _nack(self, seq, reason):
        self._send(wire.NACK, 0, wire.nack_payload(seq, reason))

    def _ack(self, seq):
        self._send(wire.ACK, 0, wire.ack_payload(seq))

    def _handle(self, frame, now_ms):
        msg_type = frame.msg_type
        payload = frame.payload
        spec_from = None
        name = wire.TYPE_NAMES.get(msg_type)
        if name is not None:
            spec_from = wire.MESSAGES[name]["from"]
        if spec_from not in ("host", "both"):
            self._nack(frame.seq, wire.NACK_REASONS["UNKNOWN_TYPE"])
            return
        if not wire.payload_length_ok(msg_type, payload):
            self._nack(frame.seq, wire.NACK_REASONS["BAD_LENGTH"])
            return
        if msg_type == wire.HELLO:
            if payload[0] != wire.PROTOCOL_VERSION:
                self._nack(frame.seq, wire.NACK_REASONS["UNSUPPORTED_VERSION"])
                return
            self.host_ready = True
            self._inflight_due_ms = now_ms  # a (re)connected host gets the pending event at once
            self._send(
                wire.VERSION, 0, wire.version_payload(frame.seq, self.firmware, self.boot_id, self.heartbeat_ms)
            )
        elif msg_type == wire.SET_STATUS:
            if payload[0] not in wire.STATUS_PATTERNS.values():
                self._nack(frame.seq, wire.NACK_REASONS["BAD_VALUE"])
                return
            self.status_pattern = payload[0]
            self.commands_applied += 1
            self._ack(frame.seq)
        elif msg_type == wire.SET_ILLUMINATION:
            self.illumination = payload[0]
            self.commands_applied += 1
            self._ack(frame.seq)
        elif msg_type == wire.ACK:
            if self._inflight_seq is not None and payload[0] == self._inflight_seq:
                self._queue.pop(0)
                self._inflight_seq = None
                self._pump_events(now_ms)
        elif msg_type == wire.NACK:
            if self._inflight_seq is not None and payload[1] == wire.NACK_REASONS["BAD_CRC"]:
                self._inflight_due_ms = now_ms
        # HEARTBEAT from the host only refreshes last_rx_ms.
