"""The controller's protocol engine (the firmware's logic), driven directly with a fake clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import wire
from firmware_bridge.controller import Controller
from firmware_bridge.debounce import PRESS, RELEASE, Debouncer, pattern_level


def frames_from(data: bytes) -> list[wire.Frame]:
    return wire.FrameDecoder().feed(data)


def send(controller: Controller, msg_type: int, seq: int, payload: bytes, now: int) -> list[wire.Frame]:
    controller.feed(wire.encode_frame(msg_type, seq, payload), now)
    return [f for f in frames_from(controller.poll(now)) if f.msg_type != wire.HEARTBEAT]


def connected_controller(**options) -> Controller:
    controller = Controller(boot_id=0xCAFE, options=options)
    controller.poll(0)
    (reply,) = send(controller, wire.HELLO, 1, wire.hello_payload(), 0)
    assert reply.msg_type == wire.VERSION
    return controller


def test_handshake_answers_version_with_the_hello_seq():
    controller = Controller(boot_id=0x1A2B3C4D, options={"heartbeat_ms": 500})
    (reply,) = send(controller, wire.HELLO, 0x42, wire.hello_payload(), 0)
    assert reply.msg_type == wire.VERSION
    assert reply.payload[0] == 0x42
    assert reply.payload[1] == wire.PROTOCOL_VERSION
    assert wire.read_u32(reply.payload, 5) == 0x1A2B3C4D
    assert wire.read_u16(reply.payload, 9) == 500
    assert controller.host_ready


def test_handshake_refuses_another_protocol_version():
    controller = Controller(boot_id=1)
    (reply,) = send(controller, wire.HELLO, 3, bytes([wire.PROTOCOL_VERSION + 1]), 0)
    assert reply.msg_type == wire.NACK
    assert reply.payload == bytes([3, wire.NACK_REASONS["UNSUPPORTED_VERSION"]])
    assert not controller.host_ready


def test_bad_commands_are_nacked_with_the_reason():
    controller = connected_controller()
    cases = [
        (0x7E, b"", "UNKNOWN_TYPE"),
        (wire.BUTTON, wire.button_payload(1, 0, 1), "UNKNOWN_TYPE"),  # a controller-only message
        (wire.SET_STATUS, b"\x01\x02", "BAD_LENGTH"),
        (wire.SET_STATUS, b"\x09", "BAD_VALUE"),
    ]
    for seq, (msg_type, payload, reason) in enumerate(cases, start=10):
        (reply,) = send(controller, msg_type, seq, payload, 1)
        assert reply.msg_type == wire.NACK
        assert reply.payload == bytes([seq, wire.NACK_REASONS[reason]])
    assert controller.commands_applied == 0


def test_commands_are_applied_and_acked():
    controller = connected_controller()
    (ack,) = send(controller, wire.SET_STATUS, 7, bytes([wire.STATUS_PATTERNS["error"]]), 1)
    assert (ack.msg_type, ack.payload) == (wire.ACK, b"\x07")
    (ack,) = send(controller, wire.SET_ILLUMINATION, 8, b"\xc8", 2)
    assert (ack.msg_type, ack.payload) == (wire.ACK, b"\x08")
    assert controller.effective_pattern() == wire.STATUS_PATTERNS["error"]
    assert controller.illumination == 200


def test_damaged_frame_gets_a_bad_crc_nack():
    controller = connected_controller()
    damaged = bytearray(wire.encode_frame(wire.SET_STATUS, 7, b"\x02"))
    damaged[2] ^= 0x10
    controller.feed(bytes(damaged), 1)
    replies = [f for f in frames_from(controller.poll(1)) if f.msg_type != wire.HEARTBEAT]
    assert [(f.msg_type, f.payload[1]) for f in replies] == [(wire.NACK, wire.NACK_REASONS["BAD_CRC"])]


def test_events_wait_for_a_host_then_retransmit_same_numbers_until_acked():
    controller = Controller(boot_id=5, options={"retry_ms": 100, "retry_max_ms": 400, "host_timeout_ms": 10_000})
    controller.queue_button(0, wire.BUTTON_ACTIONS["press"])
    assert not [f for f in frames_from(controller.poll(0)) if f.msg_type == wire.BUTTON]  # no host yet
    controller.feed(wire.encode_frame(wire.HELLO, 1, wire.hello_payload()), 0)
    sent_at = []
    seqs = set()
    for now in range(0, 1600, 10):
        controller.feed(wire.encode_frame(wire.HEARTBEAT, 0, b""), now)  # host keeps talking
        for frame in frames_from(controller.poll(now)):
            if frame.msg_type == wire.BUTTON:
                sent_at.append(now)
                seqs.add((frame.seq, frame.payload))
    assert len(seqs) == 1  # every copy has the same frame seq and the same event number
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
    assert gaps[:3] == [100, 200, 400] and set(gaps[3:]) == {400}  # doubling, capped
    (seq, payload), = seqs
    assert wire.read_u16(payload, 0) == 1
    send(controller, wire.ACK, 0, wire.ack_payload(seq), 1600)
    assert controller.pending_events() == 0


def test_full_queue_drops_presses_and_reports_how_many():
    controller = Controller(boot_id=5, options={"queue_limit": 3})
    for _ in range(5):
        controller.queue_button(0, wire.BUTTON_ACTIONS["press"])
    controller.feed(wire.encode_frame(wire.HELLO, 1, wire.hello_payload()), 0)
    delivered = []
    for now in range(0, 50):
        for frame in frames_from(controller.poll(now)):
            if frame.msg_type in (wire.BUTTON, wire.ERROR):
                delivered.append(frame)
                controller.feed(wire.encode_frame(wire.ACK, 0, wire.ack_payload(frame.seq)), now)
    kinds = [f.msg_type for f in delivered]
    assert kinds == [wire.BUTTON, wire.BUTTON, wire.BUTTON, wire.ERROR]
    error = delivered[-1].payload
    assert error[2] == wire.ERROR_CODES["EVENT_OVERFLOW"] and wire.read_u16(error, 3) == 2


def test_stuck_button_is_reported_once():
    controller = Controller(boot_id=5, options={"stuck_ms": 1000, "debounce_ms": 10})
    for now in range(0, 3000, 5):
        controller.sample_button(True, now)
    errors = [p for t, p in controller._queue if t == wire.ERROR]
    assert len(errors) == 1 and errors[0][2] == wire.ERROR_CODES["BUTTON_STUCK"]


def test_silent_host_means_offline_pattern():
    controller = connected_controller(host_timeout_ms=300)
    send(controller, wire.SET_STATUS, 2, bytes([wire.STATUS_PATTERNS["busy"]]), 10)
    assert controller.effective_pattern() == wire.STATUS_PATTERNS["busy"]
    controller.poll(400)
    assert controller.effective_pattern() == wire.STATUS_PATTERNS["offline"]


def test_debouncer_ignores_bounces_shorter_than_settle_time():
    debouncer = Debouncer(settle_ms=20)
    edges = []
    levels = [(0, True), (2, False), (4, True), (6, False), (8, True)]  # bounce, then closed
    levels += [(t, True) for t in range(9, 40)]
    levels += [(40, False), (42, True), (44, False)] + [(t, False) for t in range(45, 80)]
    for now, level in levels:
        edge = debouncer.update(level, now)
        if edge:
            edges.append((now, edge))
    assert [e for _, e in edges] == [PRESS, RELEASE]
    assert edges[0][0] >= 8 + 20 and edges[1][0] >= 44 + 20


def test_debouncer_never_reports_a_glitch():
    debouncer = Debouncer(settle_ms=20)
    assert all(debouncer.update(now % 10 < 5, now) == 0 for now in range(0, 500))


def test_led_patterns_follow_the_constants():
    patterns = wire.CONSTANTS["led_patterns_ms"]
    assert all(pattern_level("idle", t) for t in range(0, 2000, 7))
    assert not any(pattern_level("off", t) for t in range(0, 2000, 7))
    on, off = patterns["busy"]
    assert pattern_level("busy", 0) and not pattern_level("busy", on) and pattern_level("busy", on + off)
    lit = sum(pattern_level(wire.STATUS_PATTERNS["offline"], t) for t in range(0, 2000))
    assert lit == patterns["offline"][0]


any_frame = st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=wire.MAX_PAYLOAD))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(any_frame, st.binary(max_size=40)), max_size=30))
def test_fuzz_controller_survives_any_frames_and_bytes(items):
    """Well-formed frames of any type and length, mixed with noise: no exception, sane state."""
    controller = Controller(boot_id=1, options={"queue_limit": 4})
    controller.queue_button(0, wire.BUTTON_ACTIONS["press"])
    for now, item in enumerate(items):
        data = wire.encode_frame(*item) if isinstance(item, tuple) else item
        controller.feed(data, now)
        for frame in frames_from(controller.poll(now)):
            assert wire.payload_length_ok(frame.msg_type, frame.payload)
    assert controller.effective_pattern() in wire.STATUS_PATTERNS.values()
    assert 0 <= controller.illumination <= 255
    assert controller.pending_events() <= 4
