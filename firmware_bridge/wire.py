"""Frame codec shared by the host and the controller firmware: CRC-16, COBS, frame encode/decode.

This file runs unchanged under CPython (the host) and MicroPython (the Pico firmware), so both
ends of the link use one copy of the logic. It therefore sticks to the MicroPython subset:
no typing module, no dataclasses, no variable annotations, only ``json`` from the library.

Wire format of one frame (see PROTOCOL.md)::

    COBS( type:u8 | seq:u8 | payload:0..32 bytes | crc16:u16 big-endian ) | 0x00

The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0) over
``type | seq | payload``.
"""

import json


def _constants_path():
    """protocol_constants.json sits beside this file on both the host and the Pico."""
    try:
        here = __file__
    except NameError:  # frozen module on a board
        return "protocol_constants.json"
    cut = max(here.rfind("/"), here.rfind("\\"))
    return (here[: cut + 1] if cut >= 0 else "") + "protocol_constants.json"


def load_constants(path=None):
    """Read the one protocol constants file both sides use."""
    with open(path or _constants_path()) as handle:
        return json.load(handle)


CONSTANTS = load_constants()
PROTOCOL_VERSION = CONSTANTS["protocol_version"]
MAX_PAYLOAD = CONSTANTS["max_payload"]
MESSAGES = CONSTANTS["messages"]
TYPE_NAMES = {spec["type"]: name for name, spec in MESSAGES.items()}
PAYLOAD_LENGTHS = {spec["type"]: spec["payload_len"] for spec in MESSAGES.values()}
NACK_REASONS = CONSTANTS["nack_reasons"]
STATUS_PATTERNS = CONSTANTS["status_patterns"]
BUTTON_ACTIONS = CONSTANTS["button_actions"]
ERROR_CODES = CONSTANTS["error_codes"]
TIMING_MS = CONSTANTS["timing_ms"]

HELLO = MESSAGES["HELLO"]["type"]
VERSION = MESSAGES["VERSION"]["type"]
ACK = MESSAGES["ACK"]["type"]
NACK = MESSAGES["NACK"]["type"]
HEARTBEAT = MESSAGES["HEARTBEAT"]["type"]
BUTTON = MESSAGES["BUTTON"]["type"]
ERROR = MESSAGES["ERROR"]["type"]
SET_STATUS = MESSAGES["SET_STATUS"]["type"]
SET_ILLUMINATION = MESSAGES["SET_ILLUMINATION"]["type"]

# Largest decoded frame (type, seq, payload, crc) and its COBS-encoded size.
MAX_FRAME = 2 + MAX_PAYLOAD + 2
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE; crc16(b"123456789") == 0x29B1."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def cobs_encode(data):
    """Consistent Overhead Byte Stuffing: the result contains no 0x00 byte.

    A new group starts after a full 254-byte group only when more data follows, so every
    byte string has exactly one encoding (the decoder relies on that).
    """
    out = bytearray(b"\x00")
    code_index = 0
    code = 1
    last = len(data) - 1
    for position, byte in enumerate(data):
        if byte == 0:
            out[code_index] = code
            code_index = len(out)
            out.append(0)
            code = 1
            continue
        out.append(byte)
        code += 1
        if code == 0xFF and position < last:
            out[code_index] = code
            code_index = len(out)
            out.append(0)
            code = 1
    out[code_index] = code
    return bytes(out)


def cobs_decode(data):
    """Inverse of cobs_encode; None for anything cobs_encode could not have produced."""
    out = bytearray()
    index = 0
    length = len(data)
    while index < length:
        code = data[index]
        end = index + code
        if code == 0 or end > length:
            return None
        out.extend(data[index + 1 : end])
        index = end
        if code < 0xFF and index < length:
            out.append(0)
    result = bytes(out)
    # Reject non-canonical encodings so that a byte string has exactly one meaning.
    if cobs_encode(result) != bytes(data):
        return None
    return result


def encode_frame(msg_type, seq, payload=b""):
    """One frame ready for the wire, delimiter included."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload longer than %d bytes" % MAX_PAYLOAD)
    body = bytes([msg_type & 0xFF, seq & 0xFF]) + bytes(payload)
    crc = crc16(body)
    return cobs_encode(body + bytes([crc >> 8, crc & 0xFF])) + b"\x00"


class Frame:
    """A decoded frame whose CRC has been checked."""

    __slots__ = ("msg_type", "seq", "payload", "crc")

    def __init__(self, msg_type, seq, payload, crc):
        self.msg_type = msg_type
        self.seq = seq
        self.payload = payload
        self.crc = crc

    def __repr__(self):
        name = TYPE_NAMES.get(self.msg_type, "0x%02X" % self.msg_type)
        return "Frame(%s, seq=%d, payload=%s)" % (name, self.seq, bytes(self.payload).hex())


def parse_frame(decoded):
    """Check length and CRC of one COBS-decoded frame; None if it is not a valid frame."""
    if len(decoded) < 4 or len(decoded) > MAX_FRAME:
        return None
    body = decoded[:-2]
    crc = (decoded[-2] << 8) | decoded[-1]
    if crc16(body) != crc:
        return None
    return Frame(body[0], body[1], bytes(body[2:]), crc)


class FrameDecoder:
    """Turns a byte stream (any split, any merge, any garbage) into valid frames.

    Bytes accumulate until a 0x00 delimiter; a chunk that is not canonical COBS, has a bad
    length or a bad CRC is counted and dropped. A chunk longer than any valid frame is dropped
    up to the next delimiter, so a lost delimiter costs at most two frames.
    """

    def __init__(self):
        self._buffer = bytearray()
        self._overflowing = False
        self.frames = 0
        self.bad_frames = 0

    def feed(self, data):
        """Consume bytes; return the list of valid frames they completed."""
        frames = []
        for byte in data:
            if byte != 0:
                if self._overflowing:
                    continue
                if len(self._buffer) >= MAX_ENCODED:
                    self._overflowing = True
                    self._buffer = bytearray()
                    self.bad_frames += 1
                    continue
                self._buffer.append(byte)
                continue
            chunk = self._buffer
            self._buffer = bytearray()
            if self._overflowing:
                self._overflowing = False
                continue
            if not chunk:
                continue  # empty chunk: a resynchronising delimiter
            decoded = cobs_decode(chunk)
            frame = parse_frame(decoded) if decoded is not None else None
            if frame is None:
                self.bad_frames += 1
            else:
                self.frames += 1
                frames.append(frame)
        return frames


def u16(value):
    return bytes([(value >> 8) & 0xFF, value & 0xFF])


def u32(value):
    return bytes([(value >> 24) & 0xFF, (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF])


def read_u16(data, offset):
    return (data[offset] << 8) | data[offset + 1]


def read_u32(data, offset):
    return (data[offset] << 24) | (data[offset + 1] << 16) | (data[offset + 2] << 8) | data[offset + 3]


def payload_length_ok(msg_type, payload):
    """True when the payload length is one the constants allow for this message type."""
    lengths = PAYLOAD_LENGTHS.get(msg_type)
    return lengths is not None and len(payload) in lengths


def serial_newer(candidate, last, bits=16):
    """Serial-number arithmetic (RFC 1982): is candidate after last, allowing wrap-around?"""
    half = 1 << (bits - 1)
    diff = (candidate - last) & ((1 << bits) - 1)
    return 0 < diff < half


# Payload builders: one definition of each message body, used by both sides.


def hello_payload(version=PROTOCOL_VERSION):
    return bytes([version])


def version_payload(reply_seq, firmware, boot_id, heartbeat_ms):
    return bytes([reply_seq, PROTOCOL_VERSION, firmware[0], firmware[1], firmware[2]]) + u32(boot_id) + u16(heartbeat_ms)


def ack_payload(seq):
    return bytes([seq & 0xFF])


def nack_payload(seq, reason):
    return bytes([seq & 0xFF, reason])


def controller_heartbeat_payload(boot_id, pending):
    return u32(boot_id) + bytes([min(pending, 255)])


def button_payload(event_seq, button, action):
    return u16(event_seq) + bytes([button, action])


def error_payload(event_seq, code, detail):
    return u16(event_seq) + bytes([code]) + u16(detail & 0xFFFF)
