"""The device's durable outbox: a result is on disk before anyone tries to send it.

PUBACK is not durability, so every finished result is written here (SQLite, WAL, synchronous=FULL)
in the step that finishes the analysis, and it leaves only when the server's receipt for its
`result_id` arrives. Unreceipted rows are resent with the same `result_id`, so the server's
idempotent store absorbs any duplicate. A row whose publish the broker refuses for good (not
authorised, too large) is *held*, not deleted: it stays on disk until an operator releases it.

Results and the parts of their field images share this one table and its one sender: `kind` says
which topic a row goes to (`results` or `media`), and the `result_id` column is the row's receipt
key: a result's id, or `<result_id>/<image kind>/<part>` for a media part (runtime.delivery.media).
A result and its image's parts are queued in one transaction, so a crash keeps both or neither.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.contracts.errors import SmearscopeError
from runtime.delivery.media import MediaPart

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    result_id   TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    payload     BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL DEFAULT 'pending',
    note        TEXT,
    kind        TEXT NOT NULL DEFAULT 'results'
);
CREATE TABLE IF NOT EXISTS receipted (
    result_id   TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    receipted_at REAL NOT NULL
);
"""


class OutboxError(SmearscopeError):
    """The outbox cannot accept or hold a result."""


class PayloadTooLarge(OutboxError):
    """A result's encoded size exceeds the limit; refused before it is queued (never sent)."""


@dataclass(frozen=True)
class OutboxRow:
    """One message waiting for its receipt: a result, or a part of its image (`kind` "media")."""

    result_id: str  # the receipt key (a media part's is runtime.delivery.media.part_key)
    seq: int
    payload: bytes
    attempts: int
    kind: str = "results"


def encode_result(result: dict[str, Any]) -> bytes:
    """The one wire encoding of a result: compact UTF-8 JSON with sorted keys (stable for resends)."""
    return json.dumps(result, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


class Outbox:
    """SQLite-backed queue of results awaiting a server receipt. Safe to share between threads."""

    def __init__(self, path: str | Path, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_payload_bytes = max_payload_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "kind" not in columns:  # an outbox written before media rows existed
            self._db.execute("ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'results'")

    def enqueue(self, result: dict[str, Any], media: Sequence[MediaPart] = ()) -> bytes:
        """Write a result (and the parts of its images) durably in one transaction; returns the result's
        payload. Raises PayloadTooLarge before queueing anything."""
        payload = encode_result(result)
        if len(payload) > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"result {result.get('result_id')} is {len(payload)} bytes; the limit is {self.max_payload_bytes}"
            )
        try:
            result_id, seq = str(result["result_id"]), int(result["seq"])
        except (KeyError, TypeError, ValueError) as exc:
            raise OutboxError(f"result lacks a usable result_id/seq: {exc}") from exc
        rows = [(result_id, seq, payload, "results")]
        for part in media:
            encoded = part.encode()
            if len(encoded) > self.max_payload_bytes:
                raise PayloadTooLarge(f"media part {part.header.key} is {len(encoded)} bytes; "
                                      f"the limit is {self.max_payload_bytes}")
            rows.append((part.header.key, seq, encoded, "media"))
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO outbox (result_id, seq, payload, enqueued_at, kind) VALUES (?, ?, ?, ?, ?)",
                    [(key, s, p, now, kind) for key, s, p, kind in rows],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return payload

    def pending(self, limit: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[OutboxRow]:
        """Oldest pending rows (by seq), skipping the ids in `exclude` (those already in flight)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT result_id, seq, payload, attempts, kind FROM outbox WHERE state = 'pending'"
                " ORDER BY seq, rowid LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
        out = [OutboxRow(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows if r[0] not in exclude]
        return out[:limit]

    def mark_attempt(self, result_id: str) -> None:
        """Count one more publish attempt (for diagnostics; resends are driven by the sender)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE result_id = ?", (result_id,))

    def acknowledge(self, result_id: str, outcome: str) -> bool:
        """The server's receipt arrived: remove the row, keep a record. False if it was not queued."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT seq FROM outbox WHERE result_id = ?", (result_id,)).fetchone()
                if row is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO receipted (result_id, seq, outcome, receipted_at) VALUES (?, ?, ?, ?)",
                        (result_id, row[0], outcome, time.time()),
                    )
                    self._db.execute("DELETE FROM outbox WHERE result_id = ?", (result_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return row is not None

    def hold(self, result_id: str, note: str) -> None:
        """Stop resending a row the broker refused for good; it stays on disk with the reason."""
        with self._lock:
            self._db.execute("UPDATE outbox SET state = 'held', note = ? WHERE result_id = ?", (note, result_id))

    def release_held(self) -> int:
        """Put held rows back in the queue (after the operator fixed the ACL or the limit)."""
        with self._lock:
            return self._db.execute("UPDATE outbox SET state = 'pending', note = NULL WHERE state = 'held'").rowcount

    def depth(self) -> int:
        """Rows still waiting for a receipt (pending and held)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def held(self) -> list[tuple[str, str]]:
        """(result_id, reason) of every held row."""
        with self._lock:
            return self._db.execute("SELECT result_id, note FROM outbox WHERE state = 'held' ORDER BY seq").fetchall()

    def outcome(self, result_id: str) -> str | None:
        """The receipt recorded for a result, or None if none arrived yet."""
        with self._lock:
            row = self._db.execute("SELECT outcome FROM receipted WHERE result_id = ?", (result_id,)).fetchone()
        return row[0] if row else None

    def last_seq(self) -> int:
        """The highest seq ever queued here (-1 if none): a restarted device continues after it."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(s) FROM (SELECT MAX(seq) AS s FROM outbox UNION ALL SELECT MAX(seq) FROM receipted)"
            ).fetchone()
        return -1 if row[0] is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
