"""PROTOCOL.md agrees with the code: generated examples, every hex line, the message table."""

from __future__ import annotations

import re

import pytest

from firmware_bridge import wire
from firmware_bridge.protocol_doc import BEGIN_MARK, END_MARK, examples, render


@pytest.fixture(scope="module")
def protocol_md(repo_root) -> str:
    return (repo_root / "firmware_bridge" / "PROTOCOL.md").read_text(encoding="utf-8")


def parse_hex(text: str) -> bytes:
    return b"" if text == "(empty)" else bytes.fromhex(text)


def test_examples_section_is_exactly_the_generated_one(protocol_md):
    start = protocol_md.index(BEGIN_MARK)
    end = protocol_md.index(END_MARK) + len(END_MARK)
    assert protocol_md[start:end] == render(), "regenerate with: smearscope bridge examples --write"


def test_every_documented_hex_example_decodes_and_encodes_exactly(protocol_md):
    header = re.compile(r"type 0x([0-9A-F]{2}) · seq 0x([0-9A-F]{2}) · payload `([0-9A-F ]+|\(empty\))`")
    wire_line = re.compile(r"^    wire   ([0-9A-F ]+)$", re.M)
    headers = header.findall(protocol_md)
    wires = wire_line.findall(protocol_md)
    assert len(headers) == len(wires) == len(examples())
    for (msg_type, seq, payload), line in zip(headers, wires):
        fields = (int(msg_type, 16), int(seq, 16), parse_hex(payload))
        data = bytes.fromhex(line)
        (frame,) = wire.FrameDecoder().feed(data)
        assert (frame.msg_type, frame.seq, frame.payload) == fields
        assert wire.encode_frame(*fields) == data
        assert wire.payload_length_ok(frame.msg_type, frame.payload)


def test_examples_cover_every_message_type():
    assert {ex.message for ex in examples()} == set(wire.MESSAGES)


def test_message_table_matches_the_constants_file(protocol_md):
    rows = re.findall(r"^\| 0x([0-9A-F]{2}) \| (\w+) \|", protocol_md, re.M)
    assert {name: int(code, 16) for code, name in rows} == {n: s["type"] for n, s in wire.MESSAGES.items()}


def test_documented_numbers_match_the_constants_file(protocol_md):
    for name, number in wire.NACK_REASONS.items():
        assert f"{number} `{name}`" in protocol_md
    for name, number in wire.ERROR_CODES.items():
        assert f"{number} `{name}`" in protocol_md
    patterns = ", ".join(f"{n} {name}" for name, n in wire.STATUS_PATTERNS.items())
    assert f"({patterns})" in protocol_md
    for name, steps in wire.CONSTANTS["led_patterns_ms"].items():
        assert f"{name} `{'/'.join(map(str, steps))}`" in protocol_md
