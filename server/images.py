"""Images kept for results: a content-addressed folder plus a table linking results to images.

The bytes live in `root/ab/cd/<sha256>` (written to a temporary name, fsynced, then renamed, so a
crash never leaves a partial file under a final name); the database only holds the link
(result_id, kind, sha256, content type). A result whose image has not arrived yet simply has no
link, and the web app shows that image as pending. Whatever delivers images (an upload, a media
topic) calls `put` and then `attach`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from server.store import Store

#: What a result's images are: the analysed field, its overlay, the class mask (one channel of class indices).
KINDS = ("field", "overlay", "mask")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

IMAGE_TABLES = """
CREATE TABLE IF NOT EXISTS result_images (
    result_id    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    stored_at    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (result_id, kind)
)
"""


class ImageStoreError(ValueError):
    """A bad hash, or stored bytes that no longer match their hash."""


class ImageStore:
    """Content-addressed image files under one folder: put(bytes) -> sha256, get(sha256), path(sha256)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the image with this hash lives (whether or not it is there)."""
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise ImageStoreError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        """Store bytes once (a second put of the same bytes is a no-op); returns their sha256."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        if final.exists():
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, sha256: str) -> bytes | None:
        """The stored bytes, verified against their hash; None when not stored."""
        try:
            data = self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ImageStoreError(f"stored image {sha256[:12]}… does not match its hash")
        return data

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()


@dataclass(frozen=True)
class ResultImage:
    """One link from a result to a stored image."""

    result_id: str
    kind: str
    sha256: str
    content_type: str


def ensure_tables(store: Store) -> None:
    store.ensure_schema(IMAGE_TABLES)


LINK_SQL = ("INSERT INTO result_images (result_id, kind, sha256, content_type, stored_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (result_id, kind) DO NOTHING")
"""Links a stored image to a result (the first link of a kind wins); uploads and the media intake."""


def link_params(image: ResultImage, stored_at: float) -> tuple[str, str, str, str, float]:
    """LINK_SQL's parameters; an unknown kind is refused."""
    if image.kind not in KINDS:
        raise ImageStoreError(f"unknown image kind {image.kind!r}; expected one of {', '.join(KINDS)}")
    return image.result_id, image.kind, image.sha256, image.content_type, stored_at


def attach(store: Store, image: ResultImage) -> None:
    """Link an already stored image to a result in its own transaction (idempotent)."""
    store.execute(LINK_SQL, link_params(image, time.time()))


def images_for(store: Store, result_id: str) -> dict[str, ResultImage]:
    """The result's images by kind; a kind that is absent is still pending."""
    rows = store.query("SELECT result_id, kind, sha256, content_type FROM result_images WHERE result_id = ?",
                       (result_id,))
    return {r[1]: ResultImage(*r) for r in rows}
