"""Frame codec: CRC and COBS vectors, round trips, and a fuzzed decoder that never lies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import wire


def test_crc16_ccitt_false_check_value():
    # The catalogue check value of CRC-16/CCITT-FALSE.
    assert wire.crc16(b"123456789") == 0x29B1
    assert wire.crc16(b"") == 0xFFFF


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [  # vectors from the COBS paper / Wikipedia
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
        (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
        (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    ],
)
def test_cobs_vectors(raw, encoded):
    assert wire.cobs_encode(raw) == encoded
    assert wire.cobs_decode(encoded) == raw


def test_cobs_rejects_non_canonical_and_truncated():
    assert wire.cobs_decode(b"\xff" + bytes(range(1, 255)) + b"\x01") is None  # redundant empty group
    assert wire.cobs_decode(b"\x05\x11\x22") is None  # group runs past the end
    assert wire.cobs_decode(b"\x02\x00") is None  # a zero inside


def test_frame_round_trip_and_known_bytes():
    data = wire.encode_frame(wire.BUTTON, 5, wire.button_payload(1, 0, 1))
    assert data.endswith(b"\x00") and b"\x00" not in data[:-1]
    (frame,) = wire.FrameDecoder().feed(data)
    assert (frame.msg_type, frame.seq, frame.payload) == (wire.BUTTON, 5, b"\x00\x01\x00\x01")


def test_decoder_drops_a_frame_with_one_flipped_bit_and_recovers():
    good = wire.encode_frame(wire.SET_STATUS, 9, b"\x02")
    for position in range(len(good) - 1):
        for bit in range(8):
            damaged = bytearray(good)
            damaged[position] ^= 1 << bit
            decoder = wire.FrameDecoder()
            frames = decoder.feed(bytes(damaged) + good)
            # The damaged copy never decodes; the intact copy after it always does.
            assert [(f.msg_type, f.seq, f.payload) for f in frames] == [(wire.SET_STATUS, 9, b"\x02")]


def test_decoder_discards_overlong_garbage_then_resynchronises():
    decoder = wire.FrameDecoder()
    frames = decoder.feed(b"\x55" * 500 + b"\x00" + wire.encode_frame(wire.ACK, 0, b"\x07"))
    assert [(f.msg_type, f.payload) for f in frames] == [(wire.ACK, b"\x07")]
    assert decoder.bad_frames == 1


def test_encode_refuses_oversize_payload():
    with pytest.raises(ValueError):
        wire.encode_frame(wire.ERROR, 1, bytes(wire.MAX_PAYLOAD + 1))


def test_serial_number_arithmetic_wraps():
    assert wire.serial_newer(1, 0)
    assert wire.serial_newer(0, 0xFFFF)
    assert not wire.serial_newer(5, 5)
    assert not wire.serial_newer(4, 5)
    assert not wire.serial_newer(0x8005, 5)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=1, max_value=64), max_size=20))
def test_fuzz_random_bytes_never_crash_and_never_yield_a_bad_frame(data, cuts):
    """Any byte stream, fed in any pieces: no exception, and every frame is genuine."""
    decoder = wire.FrameDecoder()
    frames = []
    position = 0
    for cut in cuts:
        frames += decoder.feed(data[position : position + cut])
        position += cut
    frames += decoder.feed(data[position:])
    chunks = set(data.split(b"\x00")[:-1])  # only delimited chunks can become frames
    for frame in frames:
        body = bytes([frame.msg_type, frame.seq]) + frame.payload
        assert wire.crc16(body) == frame.crc
        assert len(frame.payload) <= wire.MAX_PAYLOAD
        # The frame's own encoding is exactly one of the delimited chunks in the input.
        assert wire.encode_frame(frame.msg_type, frame.seq, frame.payload)[:-1] in chunks


frames_strategy = st.lists(
    st.tuples(
        st.integers(0, 255), st.integers(0, 255), st.binary(max_size=wire.MAX_PAYLOAD)
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(frames_strategy, st.binary(max_size=60), st.lists(st.integers(1, 9), max_size=40))
def test_fuzz_frames_survive_any_split_and_garbage_in_front(frames, garbage, cuts):
    """Merged frames cut at arbitrary points all decode, after arbitrary leading garbage."""
    stream = garbage + b"\x00" + b"".join(wire.encode_frame(t, s, p) for t, s, p in frames)
    decoder = wire.FrameDecoder()
    decoded = []
    position = 0
    for cut in cuts:
        decoded += decoder.feed(stream[position : position + cut])
        position += cut
    decoded += decoder.feed(stream[position:])
    got = [(f.msg_type, f.seq, f.payload) for f in decoded]
    # Garbage may itself contain valid-looking frames only if it holds a correct CRC; the
    # frames we sent are always the tail of what was decoded.
    assert got[len(got) - len(frames) :] == [(t, s, bytes(p)) for t, s, p in frames]
