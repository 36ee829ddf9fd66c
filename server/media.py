"""Field images from the media topic: parts kept in the database until the image is whole.

Every part is stored (committed) before it is acknowledged and receipted, like a result. The part
that completes a set makes the server join the parts in order, check the joined bytes against the
header's size and sha256, write them to the content-addressed ImageStore (fsynced) and link them to
the result (`result_images`: result_id, kind, sha256), all before that transaction commits; the
parts are then deleted. Until then nothing links the image, so the web app shows it as pending, and
a set that never completes is never shown.

Each part ends with one outcome (its receipt): `stored`, `duplicate` (the same part again, or any
part of an image already linked) or `rejected` with a reason kept in `rejections`:
- the header is unreadable (`bad_header`, `schema_version`, `bad_part`) or too big (`too_large`);
- `conflict`: other bytes under a stored part's place, another image already linked to that
  result and kind, or a part whose size/part count disagrees with the parts stored before it;
- `device_mismatch`: the result is stored under another device than the topic's;
- `hash_mismatch`: the joined parts do not hash to the header's sha256 (the completing part is
  rejected and the whole set discarded: resending cannot mend bytes the device got wrong).
An image whose result has not arrived is stored and linked all the same: the link waits for the
result, which finds its image when it comes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.delivery.media import MediaError, MediaPart, parse_part
from runtime.delivery.topics import Topic, TopicError, parse
from server.images import IMAGE_TABLES, LINK_SQL, ImageStore, ResultImage, link_params
from server.store import Outcome, Store, Tx, is_infrastructure_error

log = logging.getLogger(__name__)

MEDIA_TABLES = """
CREATE TABLE IF NOT EXISTS media_parts (
    result_id    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    part         INTEGER NOT NULL,
    parts        INTEGER NOT NULL,
    size         BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    data         {blob} NOT NULL,
    received_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (result_id, kind, sha256, part)
)
"""


def is_media_topic(topic: str) -> bool:
    return topic.endswith("/media")


@dataclass(frozen=True)
class _Refusal(Exception):
    """A part refused inside the transaction, with what the rejection row keeps."""

    reason: str
    detail: str


class MediaIntake:
    """Stores media parts and completes images for one server process (its store thread only)."""

    def __init__(self, store: Store, images_dir: Path, max_payload_bytes: int) -> None:
        self.store = store
        self.images_dir = images_dir
        self._images: ImageStore | None = None
        self.max_payload_bytes = max_payload_bytes
        store.ensure_schema(MEDIA_TABLES + ";" + IMAGE_TABLES)

    @property
    def images(self) -> ImageStore:
        """The image folder, created when the first image is complete (a server without media has none)."""
        if self._images is None:
            self._images = ImageStore(self.images_dir)
        return self._images

    def write(self, messages: Sequence[tuple[str, bytes]]) -> list[Outcome]:
        """One outcome per message, committed in one transaction (a savepoint per part: one part the
        database refuses is rejected alone). Infrastructure errors are raised with nothing committed."""
        now = time.time()
        outcomes: list[Outcome] = []
        with self.store.transaction() as tx:
            for topic, payload in messages:
                tx.execute("SAVEPOINT one_part")
                try:
                    outcome = self._one(tx, topic, payload, now)
                except Exception as exc:  # noqa: BLE001 - infrastructure re-raised, the rest is this part's
                    if is_infrastructure_error(exc):
                        raise
                    tx.execute("ROLLBACK TO SAVEPOINT one_part")
                    outcome = self._reject(tx, topic, payload, None, "unstorable",
                                           f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300], now)
                tx.execute("RELEASE SAVEPOINT one_part")
                tx.execute("INSERT INTO deliveries (at, result_id, outcome) VALUES (?, ?, ?)",
                           (now, outcome.key or outcome.result_id, "media:" + outcome.receipt_status))
                outcomes.append(outcome)
        return outcomes

    def _one(self, tx: Tx, topic: str, payload: bytes, now: float) -> Outcome:
        try:
            where: Topic = parse(topic)
        except TopicError as exc:
            return self._reject(tx, topic, payload, None, "bad_topic", str(exc), now)
        if len(payload) > self.max_payload_bytes:
            return self._reject(tx, topic, payload, None, "too_large",
                                f"{len(payload)} bytes > limit {self.max_payload_bytes}", now)
        try:
            part = parse_part(payload)
        except MediaError as exc:
            return self._reject(tx, topic, payload, None, exc.reason, exc.detail, now)
        try:
            return self._store_part(tx, where, part, now)
        except _Refusal as refusal:
            return self._reject(tx, topic, payload, part, refusal.reason, refusal.detail, now)

    def _store_part(self, tx: Tx, where: Topic, part: MediaPart, now: float) -> Outcome:
        h = part.header
        if tx.kind == "postgres":  # parts of one image may reach several workers at once
            tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (h.sha256,))
        linked = tx.execute("SELECT sha256 FROM result_images WHERE result_id = ? AND kind = ?", (h.result_id, h.kind))
        if linked:
            if linked[0][0] == h.sha256:
                return Outcome("duplicate", None, h.result_id, h.key)
            raise _Refusal("conflict", f"result already has a {h.kind} image {linked[0][0][:12]}…")
        owner = tx.execute("SELECT device_id FROM results WHERE result_id = ?", (h.result_id,))
        if owner and owner[0][0] != where.device:
            raise _Refusal("device_mismatch", f"result {h.result_id} belongs to device {owner[0][0]!r}, "
                                              f"not {where.device!r}")
        stored = tx.execute("SELECT part, parts, size, data FROM media_parts WHERE result_id = ? AND kind = ?"
                            " AND sha256 = ?", (h.result_id, h.kind, h.sha256))
        for index, parts, size, data in stored:
            if (parts, size) != (h.parts, h.size):
                raise _Refusal("conflict", f"part set says {parts} parts / {size} bytes, this part "
                                           f"{h.parts} / {h.size}")
            if index == h.part:
                if bytes(data) == part.data:
                    return Outcome("duplicate", None, h.result_id, h.key)
                raise _Refusal("conflict", f"part {h.part} already stored with other bytes")
        tx.execute("INSERT INTO media_parts (result_id, kind, sha256, part, parts, size, content_type, device_id,"
                   " data, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (h.result_id, h.kind, h.sha256, h.part, h.parts, h.size, h.content_type, where.device,
                    part.data, now))
        if len(stored) + 1 == h.parts:
            self._complete(tx, part, now)
        return Outcome("stored", None, h.result_id, h.key)

    def _complete(self, tx: Tx, last: MediaPart, now: float) -> None:
        """All parts are in: join, verify, store the file, link it; the parts go."""
        h = last.header
        rows = tx.execute("SELECT data FROM media_parts WHERE result_id = ? AND kind = ? AND sha256 = ?"
                          " ORDER BY part", (h.result_id, h.kind, h.sha256))
        data = b"".join(bytes(r[0]) for r in rows)
        tx.execute("DELETE FROM media_parts WHERE result_id = ? AND kind = ? AND sha256 = ?",
                   (h.result_id, h.kind, h.sha256))
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != h.size or digest != h.sha256:
            raise _Refusal("hash_mismatch", f"{h.parts} parts joined to {len(data)} bytes with sha256 "
                                            f"{digest[:12]}…; the header says {h.size} bytes, {h.sha256[:12]}…")
        self.images.put(data)  # fsynced before the link below commits
        tx.execute(LINK_SQL, link_params(ResultImage(h.result_id, h.kind, h.sha256, h.content_type), now))
        log.info("image %s… of result %s complete (%d bytes, %d parts)", h.sha256[:12], h.result_id, h.size, h.parts)

    def _reject(self, tx: Tx, topic: str, payload: bytes, part: MediaPart | None, reason: str, detail: str,
                now: float) -> Outcome:
        """Keep the refusal (the header only, not the image bytes) and answer with it."""
        log.warning("rejected media part on %s: %s (%s)", topic, reason, detail)
        header = part.header.to_json() if part else payload[:512]
        device = topic.split("/")[3] if topic.count("/") == 4 else None
        rid = part.header.result_id if part else None
        tx.execute("INSERT INTO rejections (received_at, topic, device_id, result_id, reason, detail, payload)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (now, topic.encode("utf-8", "replace").decode("utf-8").replace("\x00", ""), device, rid,
                    "media:" + reason, detail, header))
        return Outcome("rejected", reason, rid, part.header.key if part else None)
