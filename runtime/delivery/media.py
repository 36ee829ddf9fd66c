"""Field images on the wire: content-addressed, split into parts that each fit one MQTT message.

A part is one message on `smearscope/v1/{site}/{device}/media`:

    <header: compact UTF-8 JSON, no newline inside> b"\\n" <the part's bytes>

The header (`media/1`) names the whole image and the part's place in it:
`{"schema": "media/1", "result_id", "kind", "sha256", "size", "part", "parts", "content_type"}`,
where `sha256` and `size` are those of the whole image and `part` counts from 0 to `parts - 1`.
Parts go through the device's outbox like results (one sender, one resend rule) and each has its
own receipt, keyed by `part_key`; the server joins them, and only bytes whose sha256 matches the
header's become an image.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

MEDIA_SCHEMA = "media/1"
#: Image kinds a device sends (the server's image store knows a few more: overlays, masks of uploads).
MEDIA_KINDS = ("field",)
CONTENT_TYPES = ("image/jpeg", "image/png")
#: Room kept in every message for the header (a header is about 260 bytes).
HEADER_ALLOWANCE = 512
#: Most parts one image may have, and the largest image; beyond them the server refuses the parts.
MAX_PARTS = 4096
MAX_IMAGE_BYTES = 64 * 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class MediaError(ValueError):
    """A media part that does not follow media/1; `reason` is the short word a receipt carries."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class MediaHeader:
    """Which image a part belongs to and where it goes."""

    result_id: str
    kind: str
    sha256: str
    size: int
    part: int
    parts: int
    content_type: str

    @property
    def key(self) -> str:
        return part_key(self.result_id, self.kind, self.part)

    def to_json(self) -> bytes:
        return json.dumps({"schema": MEDIA_SCHEMA, "result_id": self.result_id, "kind": self.kind,
                           "sha256": self.sha256, "size": self.size, "part": self.part, "parts": self.parts,
                           "content_type": self.content_type}, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class MediaPart:
    """One message's worth of an image."""

    header: MediaHeader
    data: bytes

    def encode(self) -> bytes:
        return self.header.to_json() + b"\n" + self.data


def part_key(result_id: str, kind: str, part: int) -> str:
    """The outbox and receipt key of one part: distinct from every result_id (which has no '/')."""
    return f"{result_id}/{kind}/{part}"


def split_image(result_id: str, kind: str, data: bytes, content_type: str, max_message_bytes: int) -> list[MediaPart]:
    """Cut an image into parts whose messages (header included) are at most `max_message_bytes`."""
    if kind not in MEDIA_KINDS:
        raise MediaError("bad_kind", f"kind {kind!r} is not one of {', '.join(MEDIA_KINDS)}")
    if not data:
        raise MediaError("empty", "an image has no bytes")
    chunk = max_message_bytes - HEADER_ALLOWANCE
    if chunk < 512:
        raise MediaError("too_small", f"max message size {max_message_bytes} leaves no room for image bytes")
    parts = -(-len(data) // chunk)
    if parts > MAX_PARTS or len(data) > MAX_IMAGE_BYTES:
        raise MediaError("too_large", f"{len(data)} bytes in {parts} parts exceeds {MAX_IMAGE_BYTES} bytes "
                                      f"/ {MAX_PARTS} parts")
    digest = hashlib.sha256(data).hexdigest()
    return [MediaPart(MediaHeader(result_id, kind, digest, len(data), i, parts, content_type),
                      data[i * chunk:(i + 1) * chunk]) for i in range(parts)]


def parse_part(payload: bytes) -> MediaPart:
    """Read one media/1 message; raises MediaError (with a reason) for anything else."""
    newline = payload.find(b"\n", 0, HEADER_ALLOWANCE + 1)
    if newline < 0:
        raise MediaError("bad_header", f"no header line within the first {HEADER_ALLOWANCE} bytes")
    try:
        raw = json.loads(payload[:newline].decode("utf-8", errors="strict"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MediaError("bad_header", f"header is not JSON ({str(exc)[:100]})") from exc
    header = _header(raw)
    data = payload[newline + 1:]
    if not data:
        raise MediaError("bad_part", f"part {header.part} has no bytes")
    if len(data) > header.size:
        raise MediaError("bad_part", f"part {header.part} has {len(data)} bytes, more than the image's {header.size}")
    return MediaPart(header, data)


def _header(raw: Any) -> MediaHeader:
    if not isinstance(raw, dict) or raw.get("schema") != MEDIA_SCHEMA:
        raise MediaError("schema_version", f"header schema is not {MEDIA_SCHEMA!r}")
    rid, kind, sha, ctype = (raw.get(k) for k in ("result_id", "kind", "sha256", "content_type"))
    size, part, parts = (raw.get(k) for k in ("size", "part", "parts"))
    if not isinstance(rid, str) or not _UUID.match(rid):
        raise MediaError("bad_header", "result_id is not a lowercase UUID")
    if kind not in MEDIA_KINDS:
        raise MediaError("bad_header", f"kind {kind!r} is not one of {', '.join(MEDIA_KINDS)}")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise MediaError("bad_header", "sha256 is not 64 lowercase hex digits")
    if ctype not in CONTENT_TYPES:
        raise MediaError("bad_header", f"content_type {ctype!r} is not one of {', '.join(CONTENT_TYPES)}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, part, parts)):
        raise MediaError("bad_header", "size, part and parts must be integers")
    if not 1 <= parts <= MAX_PARTS or not 0 < size <= MAX_IMAGE_BYTES:
        raise MediaError("too_large", f"{size} bytes in {parts} parts; the limits are {MAX_IMAGE_BYTES} bytes "
                                      f"and {MAX_PARTS} parts")
    if not 0 <= part < parts:
        raise MediaError("bad_header", f"part {part} is outside 0..{parts - 1}")
    return MediaHeader(rid, kind, sha, size, part, parts, ctype)


def encode_jpeg(image: Any, quality: int) -> bytes:
    """A BGR frame as JPEG bytes at `quality` (1-100)."""
    import cv2

    try:
        ok, encoded = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    except cv2.error as exc:
        raise MediaError("encode", f"OpenCV could not encode the frame as JPEG ({str(exc).strip()[:120]})") from exc
    if not ok:
        raise MediaError("encode", "OpenCV could not encode the frame as JPEG")
    return encoded.tobytes()
