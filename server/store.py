"""The server's idempotent store (SQLite by default, PostgreSQL through a URL).

`write` stores a batch of checked messages in one transaction: a result keyed by `result_id` is
`stored` for a new id, `duplicate` for a resend of identical content, or `conflict` for the same id
with different content (that message is then kept in `rejections` with its reason); a refused
message is kept in `rejections`. Every processed message also leaves a row in `deliveries`, so
duplicates absorbed and rejections can be counted afterwards. One commit per batch, not per
message, is what lets one server store thousands of results per second.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.contracts.errors import ConfigError, SmearscopeError
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
    key: str | None = None  # a media part's receipt key (runtime.delivery.media.part_key); None for results

    @property
    def receipt_status(self) -> str:
        return self.status if self.reason is None else f"{self.status}:{self.reason}"


@dataclass(frozen=True)
class Checked:
    """One message as received (topic and bytes) with the validator's verdict."""

    topic: str
    payload: bytes
    verdict: Accepted | Rejected


class StoreUnavailable(SmearscopeError):
    """The database cannot be reached or written right now; nothing was committed."""


#: Errors that say the database (not the message) is the problem: retried, never blamed on a message.
_INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError, sqlite3.InterfaceError, OSError)
try:
    import psycopg as _psycopg

    _INFRASTRUCTURE_ERRORS += (_psycopg.OperationalError, _psycopg.InterfaceError)
except ImportError:  # PostgreSQL support is optional
    _psycopg = None


def is_infrastructure_error(exc: BaseException) -> bool:
    """True for a lost connection, a database that is down, locked or out of disk."""
    return isinstance(exc, (StoreUnavailable, *_INFRASTRUCTURE_ERRORS))


class Store:
    """A DB-API connection plus the few SQL statements the server needs (one thread at a time)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.RLock()
        self._db: Any = None
        if url.startswith("sqlite:///"):
            self.kind = "sqlite"
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        elif url.startswith(("postgresql://", "postgres://")):
            if _psycopg is None:
                raise ConfigError("database: PostgreSQL needs `pip install \"psycopg[binary]\"`")
            self.kind = "postgres"
        else:
            raise ConfigError(f"database: unsupported URL {url!r} (use sqlite:///PATH or postgresql://...)")
        self._connect()

    def _connect(self) -> None:
        if self.kind == "sqlite":
            db = sqlite3.connect(self.url[len("sqlite:///"):], isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=10000")
            db.executescript(_TABLES.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB"))
        else:
            db = _psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            with db.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(72317)")  # several servers may start together
                for stmt in _TABLES.format(serial="BIGSERIAL PRIMARY KEY", blob="BYTEA").split(";"):
                    if stmt.strip():
                        cur.execute(stmt)
                cur.execute("SELECT pg_advisory_unlock(72317)")
        self._db = db

    def ping(self) -> bool:
        """Reconnect if needed and run a trivial query: True when the database answers."""
        try:
            with self._transaction() as cur:
                self._exec(cur, "SELECT 1", ())
                cur.fetchall()
            return True
        except _INFRASTRUCTURE_ERRORS:
            return False

    # -- writing --------------------------------------------------------------------------------
    def write(self, batch: Sequence[Checked]) -> list[Outcome]:
        """Store or reject every message of `batch` in ONE transaction; committed when this returns.

        Results are idempotent on result_id (a resend is `duplicate`, other content under a stored
        id is `conflict`); each message leaves a row in `deliveries`. Raises on any database error,
        with nothing of the batch committed.
        """
        with self._transaction() as cur:
            return self._write_rows(cur, batch, time.time())

    def write_isolating(self, batch: Sequence[Checked], unstorable: Callable[[Checked, Exception], Checked]
                        ) -> list[Outcome]:
        """Like `write`, still one transaction, but each message in its own savepoint: a message the
        database refuses is rolled back alone and replaced by `unstorable(message, error)` (a rejection).
        Infrastructure errors are raised as they are."""
        now = time.time()
        outcomes: list[Outcome] = []
        with self._transaction() as cur:
            for item in batch:
                self._exec(cur, "SAVEPOINT one_message", ())
                try:
                    outcomes += self._write_rows(cur, [item], now)
                except Exception as exc:  # noqa: BLE001 - infrastructure re-raised, the rest is the message's
                    if is_infrastructure_error(exc):
                        raise
                    self._exec(cur, "ROLLBACK TO SAVEPOINT one_message", ())
                    outcomes += self._write_rows(cur, [unstorable(item, exc)], now)
                self._exec(cur, "RELEASE SAVEPOINT one_message", ())
        return outcomes

    def _write_rows(self, cur: Any, batch: Sequence[Checked], now: float) -> list[Outcome]:
        """The rows of one batch inside the caller's transaction."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        first: dict[str, int] = {}  # result_id -> index of its first copy in this batch
        for i, item in enumerate(batch):
            if isinstance(item.verdict, Accepted):
                first.setdefault(item.verdict.result["result_id"], i)
        inserted = self._insert_results(cur, [batch[i].verdict for i in first.values()], now)
        existing = self._stored_hashes(cur, [rid for rid in first if rid not in inserted])
        rejections: list[tuple[Any, ...]] = []
        for i, item in enumerate(batch):
            v = item.verdict
            if isinstance(v, Rejected):
                outcomes[i] = Outcome("rejected", v.reason, v.result_id)
                rejections.append((now, item.topic, v.topic.device if v.topic else None, v.result_id, v.reason,
                                   v.detail, item.payload))
                continue
            rid = v.result["result_id"]
            if first[rid] == i and rid in inserted:
                outcomes[i] = Outcome("stored", None, rid)
                continue
            stored_hash = batch[first[rid]].verdict.content_sha256 if rid in inserted else existing[rid]
            if stored_hash == v.content_sha256:
                outcomes[i] = Outcome("duplicate", None, rid)
            else:
                outcomes[i] = Outcome("rejected", "conflict", rid)
                rejections.append((now, item.topic, v.result["device_id"], rid, "conflict",
                                   f"result_id already stored with content {stored_hash[:12]}…",
                                   v.canonical.encode("utf-8")))
        if rejections:
            self._executemany(cur, "INSERT INTO rejections (received_at, topic, device_id, result_id, reason,"
                                   " detail, payload) VALUES (?, ?, ?, ?, ?, ?, ?)", rejections)
        done = [o for o in outcomes if o is not None]
        if self.kind == "postgres":
            cur.execute("INSERT INTO deliveries (at, result_id, outcome) SELECT %s, * FROM unnest(%b::text[],"
                        " %b::text[])", (now, [o.result_id for o in done], [o.receipt_status for o in done]))
        else:
            cur.executemany("INSERT INTO deliveries (at, result_id, outcome) VALUES (?, ?, ?)",
                            [(now, o.result_id, o.receipt_status) for o in done])
        return done

    def _insert_results(self, cur: Any, accepted: list[Accepted], now: float) -> set[str]:
        """One statement for the whole batch; returns the ids that were new.

        PostgreSQL gets one column array per field (`unnest`): the statement text never changes, so
        it is parsed once, whatever the batch size. SQLite gets a multi-row VALUES list.
        """
        if not accepted:
            return set()
        rows = [(a.result["result_id"], a.topic.site, a.result["device_id"], a.result["seq"], a.result["created_at"],
                 a.result["sample"]["sample_id"], a.result["sample"].get("patient_id"), a.content_sha256, a.canonical,
                 now) for a in accepted]
        columns = ("INSERT INTO results (result_id, site, device_id, seq, created_at, sample_id, patient_id,"
                   " content_sha256, payload, received_at) ")
        tail = " ON CONFLICT (result_id) DO NOTHING RETURNING result_id"
        if self.kind == "postgres":
            # %b: arrays go in binary, so the JSON text is not escaped and re-parsed as an array literal
            cur.execute(columns + "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %s::bigint[], %b::text[],"
                        " %b::text[], %b::text[], %b::text[], %b::text[], %b::float8[])" + tail,
                        [list(col) for col in zip(*rows)])
        else:
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
            cur.execute(columns + "VALUES " + values + tail, [v for row in rows for v in row])
        return {row[0] for row in cur.fetchall()}

    def _stored_hashes(self, cur: Any, ids: list[str]) -> dict[str, str]:
        if not ids:
            return {}
        if self.kind == "postgres":
            cur.execute("SELECT result_id, content_sha256 FROM results WHERE result_id = ANY(%s)", (ids,))
        else:
            marks = ", ".join("?" * len(ids))
            cur.execute(f"SELECT result_id, content_sha256 FROM results WHERE result_id IN ({marks})", ids)
        return dict(cur.fetchall())

    def record(self, accepted: Accepted) -> Outcome:
        """Idempotent insert of one valid result; committed when this returns."""
        return self.write([Checked(str(accepted.topic), accepted.canonical.encode("utf-8"), accepted)])[0]

    def reject(self, topic: str, rejected: Rejected, payload: bytes) -> Outcome:
        """Keep a refused message with its reason; committed when this returns."""
        return self.write([Checked(topic, payload, rejected)])[0]

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

    @contextmanager
    def transaction(self) -> Iterator["Tx"]:
        """One transaction for a module with its own tables (server.media): committed on leaving."""
        with self._transaction() as cur:
            yield Tx(self, cur)

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
        with self._lock:
            if self._db is not None:
                self._db.close()

    # -- plumbing -------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock:
            if self.kind == "sqlite":
                cur = self._db.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                    cur.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        cur.execute("ROLLBACK")
                    raise
            else:
                if self._db is None or self._db.closed or self._db.broken:
                    self._connect()  # after a database restart; raises OperationalError while it is down
                with self._db.transaction(), self._db.cursor() as cur:
                    yield cur

    def _exec(self, cur: Any, sql: str, params: tuple[Any, ...]) -> None:
        cur.execute(sql if self.kind == "sqlite" else sql.replace("?", "%s"), params)

    def _executemany(self, cur: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
        cur.executemany(sql if self.kind == "sqlite" else sql.replace("?", "%s"), rows)


class Tx:
    """Statements written with `?` placeholders inside one `Store.transaction()`."""

    def __init__(self, store: Store, cur: Any) -> None:
        self.store, self.cur, self.kind = store, cur, store.kind

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; its rows when it returns any."""
        self.store._exec(self.cur, sql, params)
        return list(self.cur.fetchall()) if self.cur.description else []
