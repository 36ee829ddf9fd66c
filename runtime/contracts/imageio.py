"""Reading and checking image files and frames, with errors that name the file and the problem.

This is the one place that turns an image file into pixels. Limits come before work: the path must
be a regular file (a FIFO or a device would block or never end), the file must fit MAX_IMAGE_BYTES,
and the width and height are read from the format's header and checked against MAX_IMAGE_PIXELS
before anything is decoded (a small compressed file can decode to gigabytes). OpenCV's own pixel
limit is set to the same number as a second fence.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: A field far beyond any microscope camera is refused (a 24-megapixel sensor, 6000x4000, is the most).
MAX_IMAGE_PIXELS = 6000 * 4000
#: Compressed size limit: a 24-megapixel 16-bit TIFF without compression is about 144 MB.
MAX_IMAGE_BYTES = 160 * 1024 * 1024
# OpenCV reads this once, at its first decode; set before cv2 is imported anywhere through here.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from runtime.contracts.errors import ImageError  # noqa: E402
from runtime.contracts.safe_load import read_regular_file  # noqa: E402

SUPPORTED_FORMATS = "PNG, JPEG, BMP, TIFF or WebP"


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 BGR array (OpenCV's order), limits checked first."""
    path = Path(path)
    return decode_image(_read_bounded(path), str(path))[1]


def decode_image(data: bytes, source: str, max_pixels: int | None = None) -> tuple[str, np.ndarray]:
    """(format, HxWx3 uint8 BGR frame) of an encoded image held in memory: the format and the
    pixel count from the header before anything is decoded, a cut-off file refused, decoder
    complaints turned into the one-line ImageError naming `source`. The one image decoder."""
    fmt, size = image_header_size(data)
    if fmt is None:
        raise ImageError(f"{source}: not a readable image (corrupt or unsupported format; use {SUPPORTED_FORMATS})")
    if size is None:
        raise ImageError(f"{source}: not a readable image (corrupt {fmt} header: no width and height)")
    check_pixel_count(size, source, MAX_IMAGE_PIXELS if max_pixels is None else max_pixels)
    if not _complete(fmt, data):
        raise ImageError(f"{source}: {fmt} file is truncated (its end marker is missing)")
    with decoder_messages() as messages:
        frame = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    said = f" ({'; '.join(messages)[:200]})" if messages else ""
    if frame is None:
        raise ImageError(f"{source}: not a readable image (corrupt {fmt} data){said}")
    if any(m.startswith(_CORRUPT_BUT_DECODED) for m in messages):  # decoded, with grey where data was lost
        raise ImageError(f"{source}: corrupt {fmt} data{said}")
    return fmt, check_frame(frame, source=source)


def decode_class_mask(data: bytes, source: str) -> np.ndarray:
    """An HxW uint8 class mask stored as a single-channel PNG (what `write_image` writes for a
    mask), with the same header limits as any image; ImageError otherwise."""
    fmt, size = image_header_size(data)
    if fmt != "PNG" or size is None:
        raise ImageError(f"{source}: a class mask is a PNG file")
    check_pixel_count(size, source)
    mask = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        raise ImageError(f"{source}: not a single-channel 8-bit class mask")
    return mask


#: What the image libraries print (to the process's stderr, not through Python) while decoding.
_DECODER_PREFIXES = ("libpng", "Corrupt JPEG", "Premature end of JPEG", "Invalid JPEG", "Not a JPEG",
                     "Bogus", "Unsupported JPEG", "TIFF", "[ WARN", "[ERROR")
#: Messages after which the library still returns an image, filled in where data was missing.
_CORRUPT_BUT_DECODED = ("Corrupt JPEG", "Premature end of JPEG", "libpng error")
_STDERR_LOCK = threading.Lock()


@contextmanager
def decoder_messages() -> Iterator[list[str]]:
    """Collect what the C decoders print on file descriptor 2 during the block, so a person sees one
    line naming the file instead of a library's own line; anything else printed meanwhile (another
    thread's log) is passed on unchanged afterwards."""
    messages: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable descriptor 2: decode without collecting
            yield messages
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            others = []
            for line in sink.read().decode("utf-8", "replace").splitlines():
                (messages if line.startswith(_DECODER_PREFIXES) else others).append(line.strip())
            if others:
                os.write(2, ("\n".join(others) + "\n").encode("utf-8"))


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, after checking it is a regular file within MAX_IMAGE_BYTES."""
    data = read_regular_file(path, "image file", MAX_IMAGE_BYTES, ImageError)
    if not data:
        raise ImageError(f"{path}: file is empty")
    return data


def check_pixel_count(size: tuple[int, int], source: str, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse a width x height beyond `max_pixels` (or without pixels) before decoding."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{source}: image header says {width}x{height} pixels; not a usable image")
    if width * height > max_pixels:
        raise ImageError(f"{source}: image is {width}x{height} ({width * height / 1e6:.1f} megapixels), more than "
                         f"the {max_pixels / 1e6:.0f}-megapixel limit for one field; crop or downscale it "
                         "(refused before decoding)")


def image_header_size(data: bytes) -> tuple[str | None, tuple[int, int] | None]:
    """(format, (width, height)) read from the header only; (None, None) for an unknown format,
    (format, None) for a known one whose header is cut short or corrupt."""
    for fmt, test, reader in _FORMATS:
        if test(data):
            try:
                return fmt, reader(data)
            except (struct.error, IndexError, ValueError):
                return fmt, None
    return None, None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the marker segments up to the first start-of-frame (SOF0-SOF15 except DHT/JPG/DAC)."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        i += 2 + length
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    header = struct.unpack("<I", data[14:18])[0]
    if header == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width and height (tags 256, 257) of the first IFD; a BigTIFF is read too."""
    order = "<" if data[:2] == b"II" else ">"
    version = struct.unpack(order + "H", data[2:4])[0]
    if version == 42:
        offset = struct.unpack(order + "I", data[4:8])[0]
        count = struct.unpack(order + "H", data[offset:offset + 2])[0]
        entries, entry_size, first = count, 12, offset + 2
    elif version == 43:
        offset = struct.unpack(order + "Q", data[8:16])[0]
        count = struct.unpack(order + "Q", data[offset:offset + 8])[0]
        entries, entry_size, first = count, 20, offset + 8
    else:
        return None
    found: dict[int, int] = {}
    for n in range(min(entries, 4096)):
        at = first + n * entry_size
        tag, kind = struct.unpack(order + "HH", data[at:at + 4])
        if tag in (256, 257):
            value_at = at + (8 if version == 42 else 12)
            fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if fmt is None:
                return None
            found[tag] = struct.unpack(order + fmt, data[value_at:value_at + struct.calcsize(fmt)])[0]
    if 256 not in found or 257 not in found:
        return None
    return found[256], found[257]


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


_FORMATS = (
    ("PNG", lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", _png_size),
    ("JPEG", lambda d: d[:2] == b"\xff\xd8", _jpeg_size),
    ("BMP", lambda d: d[:2] == b"BM" and len(d) >= 26, _bmp_size),
    ("TIFF", lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), _tiff_size),
    ("WebP", lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", _webp_size),
)


def _complete(fmt: str, data: bytes) -> bool:
    """A PNG ends with its IEND chunk and a JPEG with its EOI marker; a cut-off file would decode
    to a partly grey image without an error."""
    tail = data[-4096:]
    if fmt == "PNG":
        return b"IEND" in tail
    if fmt == "JPEG":
        return b"\xff\xd9" in tail
    return True


def check_frame(frame: np.ndarray, source: str = "frame") -> np.ndarray:
    """Validate a colour frame: HxWx3, uint8. 1- and 4-channel frames are refused, not guessed at."""
    if not isinstance(frame, np.ndarray):
        raise ImageError(f"{source}: expected a numpy array, got {type(frame).__name__}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        raise ImageError(f"{source}: image has 1 channel (greyscale); a colour (3-channel) smear image is required")
    if frame.ndim != 3:
        raise ImageError(f"{source}: expected an HxWx3 image, got shape {frame.shape}")
    if frame.shape[2] == 4:
        raise ImageError(f"{source}: image has 4 channels (alpha); save it as a 3-channel colour image")
    if frame.shape[2] != 3:
        raise ImageError(f"{source}: expected 3 colour channels, got {frame.shape[2]}")
    if frame.dtype != np.uint8:
        if frame.dtype == np.uint16:
            frame = (frame // 257).astype(np.uint8)
        else:
            raise ImageError(f"{source}: unsupported pixel type {frame.dtype}, expected 8-bit")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ImageError(f"{source}: image is empty ({frame.shape[1]}x{frame.shape[0]})")
    return frame


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an image, raising ImageError if OpenCV cannot (bad extension, unwritable folder)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageError(f"{path.parent}: cannot create output folder ({exc.strerror})") from exc
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ImageError(f"{path}: cannot encode image as {path.suffix or '.png'}")
    try:
        path.write_bytes(encoded.tobytes())
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror})") from exc
