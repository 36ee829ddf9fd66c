"""The server's idempotent store (SQLite by default, PostgreSQL through a URL).

`record` inserts a result keyed by `result_id` in one transaction and returns `stored` for a new
id, `duplicate` for a resend of identical content, or `conflict` for the same id with different
content (that message is then kept in `rejections` with its reason). Every processed message also
leaves a row in `deliveries`, so duplicates absorbed and rejections can be counted afterwards.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.contracts.errors import ConfigError
from server.validation import Accepted, Rejected

_TABLES = """
CREATE TABLE IF NOT EXISTS results (
    result_id      TEXT PRIMARY KEY,
    site           TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    created_at     TEXT NOT NULL,
    sample_id      TEXT NOT NULL,
    patient_id     TEXT,
    content_sha256 TEXT NOT NULL,
    payload        TEXT NOT NULL,
    received_at    DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS results_patient ON results (patient_id, created_at);
CREATE TABLE IF NOT EXISTS rejections (
    id          {serial},
    received_at DOUBLE PRECISION NOT NULL,
    topic       TEXT NOT NULL,
    device_id   TEXT,
    result_id   TEXT,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    payload     {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id          {serial},
    at          DOUBLE PRECISION NOT NULL,
    result_id   TEXT,
    outcome     TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Outcome:
    """What the store did with one message; `receipt_status` is what the device is told."""

    status: str  # stored | duplicate | rejected
    reason: str | None = None
    result_id: str | None = None

    @property
    def receipt_status(self) -> str:
        return self.status if self.reason is None else f"{self.status}:{self.reason}"


class Store:
    """A DB-API connection plus the few SQL statements the server needs."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            self.kind = "sqlite"
            path = Path(url[len("sqlite:///"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db: Any = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_TABLES.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB"))
        elif url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError as exc:
                raise ConfigError("database: PostgreSQL needs `pip install \"psycopg[binary]\"`") from exc
            self.kind = "postgres"
            self._db = psycopg.connect(url, autocommit=True)
            with self._db.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(72317)")  # several servers may start together
                for stmt in _TABLES.format(serial="BIGSERIAL PRIMARY KEY", blob="BYTEA").split(";"):
                    if stmt.strip():
                        cur.execute(stmt)
                cur.execute("SELECT pg_advisory_unlock(72317)")
        else:
            raise ConfigError(f"database: unsupported URL {url!r} (use sqlite:///PATH or postgresql://...)")

    # -- writing --------------------------------------------------------------------------------
    def record(self, accepted: Accepted) -> Outcome:
        """Idempotent insert; committed when this returns."""
        r = accepted.result
        sample = r["sample"]
        with self._transaction() as cur:
            self._exec(
                cur,
                "INSERT INTO results (result_id, site, device_id, seq, created_at, sample_id, patient_id,"
                " content_sha256, payload, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (result_id) DO NOTHING",
                (r["result_id"], accepted.topic.site, r["device_id"], r["seq"], r["created_at"], sample["sample_id"],
                 sample.get("patient_id"), accepted.content_sha256, accepted.canonical, time.time()),
            )
            if cur.rowcount == 1:
                outcome = Outcome("stored", None, r["result_id"])
            else:
                self._exec(cur, "SELECT content_sha256 FROM results WHERE result_id = ?", (r["result_id"],))
                existing = cur.fetchone()[0]
                if existing == accepted.content_sha256:
                    outcome = Outcome("duplicate", None, r["result_id"])
                else:
                    outcome = Outcome("rejected", "conflict", r["result_id"])
                    self._insert_rejection(cur, str(accepted.topic), r["device_id"], r["result_id"], "conflict",
                                           f"result_id already stored with content {existing[:12]}…",
                                           accepted.canonical.encode("utf-8"))
            self._exec(cur, "INSERT INTO deliveries (at, result_id, outcome) VALUES (?, ?, ?)",
                       (time.time(), r["result_id"], outcome.receipt_status))
        return outcome

    def reject(self, topic: str, rejected: Rejected, payload: bytes) -> Outcome:
        """Keep a refused message with its reason; committed when this returns."""
        device = rejected.topic.device if rejected.topic else None
        with self._transaction() as cur:
            self._insert_rejection(cur, topic, device, rejected.result_id, rejected.reason, rejected.detail, payload)
            self._exec(cur, "INSERT INTO deliveries (at, result_id, outcome) VALUES (?, ?, ?)",
                       (time.time(), rejected.result_id, f"rejected:{rejected.reason}"))
        return Outcome("rejected", rejected.reason, rejected.result_id)

    def _insert_rejection(self, cur: Any, topic: str, device: str | None, result_id: str | None, reason: str,
                          detail: str, payload: bytes) -> None:
        self._exec(cur, "INSERT INTO rejections (received_at, topic, device_id, result_id, reason, detail, payload)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (time.time(), topic, device, result_id, reason, detail, payload))

    # -- reading --------------------------------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query written with `?` placeholders."""
        with self._transaction() as cur:
            self._exec(cur, sql, params)
            return list(cur.fetchall())

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one writing statement written with `?` placeholders in its own transaction; rows affected."""
        with self._transaction() as cur:
            self._exec(cur, sql, params)
            return cur.rowcount

    def execute_many(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Several writing statements in one transaction: all committed or none."""
        with self._transaction() as cur:
            for sql, params in statements:
                self._exec(cur, sql, params)

    def ensure_schema(self, ddl: str) -> None:
        """Create tables and indexes (`CREATE ... IF NOT EXISTS`, `;`-separated) for a module that keeps its own.

        `{serial}` and `{blob}` are replaced with this database's auto-increment key and byte types."""
        serial, blob = (("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB") if self.kind == "sqlite"
                        else ("BIGSERIAL PRIMARY KEY", "BYTEA"))
        statements = [s.strip() for s in ddl.format(serial=serial, blob=blob).split(";") if s.strip()]
        if self.kind == "postgres":
            with self._transaction() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(72318)")  # several processes may start together
                for stmt in statements:
                    cur.execute(stmt)
        else:
            with self._transaction() as cur:
                for stmt in statements:
                    cur.execute(stmt)

    def counts(self) -> dict[str, int]:
        """Stored results, distinct ids, and delivery outcomes by kind."""
        out = {"results": self.query("SELECT COUNT(*) FROM results")[0][0],
               "rejections": self.query("SELECT COUNT(*) FROM rejections")[0][0]}
        for outcome, n in self.query("SELECT outcome, COUNT(*) FROM deliveries GROUP BY outcome"):
            out[f"delivery:{outcome}"] = n
        return out

    def close(self) -> None:
        self._db.close()

    # -- plumbing -------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        if self.kind == "sqlite":
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        else:
            with self._db.transaction(), self._db.cursor() as cur:
                yield cur

    def _exec(self, cur: Any, sql: str, params: tuple[Any, ...]) -> None:
        cur.execute(sql if self.kind == "sqlite" else sql.replace("?", "%s"), params)
