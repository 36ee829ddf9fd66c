"""The web app's tables beside the subscriber's, and the queries its pages need.

The subscriber's `results` rows are never changed. The web app keeps, per result, a small index row
(`result_meta`: the fields the inbox filters on, taken from the payload once) so the inbox stays a
plain indexed query with 10,000+ results; rows for results stored by any server process since the
last page view are added on the next view. Reviews are separate, append-only rows; a result's review
state (preliminary / verified / amended) is the last review's outcome.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from server.images import IMAGE_TABLES
from server.store import Store

WEB_TABLES = """
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    id         {serial},
    result_id  TEXT NOT NULL,
    at         DOUBLE PRECISION NOT NULL,
    user_name  TEXT NOT NULL,
    action     TEXT NOT NULL,
    changes    TEXT NOT NULL,
    comment    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_result ON reviews (result_id, at);
CREATE TABLE IF NOT EXISTS result_meta (
    result_id    TEXT PRIMARY KEY,
    site         TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    sample_id    TEXT NOT NULL,
    patient_id   TEXT,
    diag_status  TEXT,
    needs_review INTEGER NOT NULL,
    review_state TEXT NOT NULL,
    rbc          INTEGER NOT NULL,
    wbc          INTEGER NOT NULL,
    platelet     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS meta_created ON result_meta (created_at, result_id);
CREATE INDEX IF NOT EXISTS meta_site ON result_meta (site, created_at);
CREATE INDEX IF NOT EXISTS meta_device ON result_meta (device_id, created_at);
CREATE INDEX IF NOT EXISTS meta_status ON result_meta (diag_status, created_at);
CREATE INDEX IF NOT EXISTS meta_review ON result_meta (review_state, created_at);
CREATE INDEX IF NOT EXISTS meta_needs ON result_meta (needs_review, created_at);
CREATE INDEX IF NOT EXISTS meta_patient ON result_meta (patient_id, created_at);
CREATE TABLE IF NOT EXISTS device_status (
    site       TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    state      TEXT NOT NULL,
    changed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (site, device_id)
)
"""

REVIEW_STATES = ("preliminary", "verified", "amended")
DIAGNOSIS_STATUSES = ("normal", "prediabetes", "diabetes", "gestational_diabetes", "indeterminate")
PAGE_SIZE = 50


def review_reasons(result: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether a person should look at this result, and why.

    A result/2 says so itself (`review.needed`, `review.reasons`); for a result/1 the server applies
    the rules it can: a frame the quality gate refused, an indeterminate diagnosis, a diagnosis that
    asks for confirmation."""
    review = result.get("review")
    if isinstance(review, dict):
        reasons = [r if isinstance(r, str) else str(r.get("reason") or r.get("code") or r)
                   for r in review.get("reasons") or []]
        return bool(review.get("needed")), reasons
    reasons = []
    quality = result.get("quality") or {}
    if not quality.get("accepted", True):
        reasons.append("quality gate refused the frame: " + ("; ".join(quality.get("reasons") or []) or "no reason given"))
    diagnosis = result.get("diagnosis") or {}
    if diagnosis.get("status") == "indeterminate":
        reasons.append("diagnosis indeterminate")
    if diagnosis.get("confirmation_needed"):
        reasons.append("diagnosis needs a confirming test")
    return bool(reasons), reasons


@dataclass(frozen=True)
class InboxFilter:
    """What the inbox shows; every field optional."""

    site: str = ""
    device: str = ""
    date_from: str = ""  # YYYY-MM-DD, inclusive
    date_to: str = ""  # YYYY-MM-DD, inclusive
    status: str = ""  # diagnosis status, or "none" for results without a diagnosis
    review: str = ""  # preliminary | verified | amended
    needs_review: bool = False
    patient: str = ""

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for column, value in (("site", self.site), ("device_id", self.device), ("review_state", self.review),
                              ("patient_id", self.patient)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.status == "none":
            clauses.append("diag_status IS NULL")
        elif self.status:
            clauses.append("diag_status = ?")
            params.append(self.status)
        if self.date_from:
            clauses.append("created_at >= ?")
            params.append(self.date_from)
        if self.date_to:
            clauses.append("created_at < ?")
            params.append(self.date_to + "T99")  # every time of that day sorts below "T99"
        if self.needs_review:
            clauses.append("needs_review = 1")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def query_string(self) -> dict[str, str]:
        out = {k: v for k, v in (("site", self.site), ("device", self.device), ("from", self.date_from),
                                 ("to", self.date_to), ("status", self.status), ("review", self.review),
                                 ("patient", self.patient)) if v}
        if self.needs_review:
            out["needs_review"] = "1"
        return out


@dataclass
class InboxRow:
    result_id: str
    site: str
    device_id: str
    created_at: str
    sample_id: str
    patient_id: str | None
    diag_status: str | None
    needs_review: bool
    review_state: str
    rbc: int
    wbc: int
    platelet: int


@dataclass
class InboxPage:
    rows: list[InboxRow]
    total: int
    page: int
    pages: int
    filters: InboxFilter = field(default_factory=InboxFilter)


_META_COLUMNS = ("result_id, site, device_id, created_at, sample_id, patient_id, diag_status, needs_review,"
                 " review_state, rbc, wbc, platelet")


class Database:
    """The store shared by every request thread and the upload worker, one statement group at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.RLock()
        store.ensure_schema(WEB_TABLES + ";" + IMAGE_TABLES)

    @property
    def kind(self) -> str:
        return self.store.kind

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.store.query(sql, tuple(params))

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> int:
        with self.lock:
            return self.store.execute(sql, tuple(params))

    def execute_many(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        with self.lock:
            self.store.execute_many(statements)

    def close(self) -> None:
        self.store.close()

    # -- the inbox's index ------------------------------------------------------------------------
    def sync_meta(self, batch: int = 2000) -> int:
        """Index results stored since the last call, in transactions of `batch` rows; returns how many were added."""
        added = 0
        while True:
            n = self._sync_batch(batch)
            added += n
            if n < batch:
                return added

    def _sync_batch(self, limit: int) -> int:
        with self.lock:
            rows = self.store.query(
                "SELECT r.result_id, r.site, r.payload FROM results r WHERE NOT EXISTS"
                " (SELECT 1 FROM result_meta m WHERE m.result_id = r.result_id) LIMIT ?", (limit,))
            if not rows:
                return 0
            # Reviews are only ever added to indexed results, so this is for a rebuilt index.
            states = {rid: {"verify": "verified", "amend": "amended"}[action] for rid, action in self.store.query(
                "SELECT result_id, action FROM reviews WHERE action IN ('verify', 'amend') ORDER BY at, id")}
            inserts = []
            for result_id, site, payload in rows:
                result = json.loads(payload)
                needed, _ = review_reasons(result)
                sample, counts = result.get("sample") or {}, result.get("counts") or {}
                state = states.get(result_id, "preliminary")
                inserts.append((
                    "INSERT INTO result_meta (" + _META_COLUMNS + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (result_id) DO NOTHING",
                    (result_id, site, result.get("device_id", ""), result.get("created_at", ""),
                     sample.get("sample_id", ""), sample.get("patient_id"), (result.get("diagnosis") or {}).get("status"),
                     int(needed), state, int(counts.get("rbc", 0)), int(counts.get("wbc", 0)),
                     int(counts.get("platelet", 0)))))
            self.store.execute_many(inserts)
            return len(inserts)

    def inbox(self, filters: InboxFilter, page: int = 1, page_size: int = PAGE_SIZE) -> InboxPage:
        """One page of results, newest first."""
        self.sync_meta()
        where, params = filters.where()
        total = self.query("SELECT COUNT(*) FROM result_meta" + where, params)[0][0]
        pages = max(1, -(-total // page_size))
        page = min(max(1, page), pages)
        rows = self.query("SELECT " + _META_COLUMNS + " FROM result_meta" + where +
                          " ORDER BY created_at DESC, result_id DESC LIMIT ? OFFSET ?",
                          [*params, page_size, (page - 1) * page_size])
        return InboxPage([InboxRow(*r[:7], bool(r[7]), *r[8:]) for r in rows], total, page, pages, filters)

    def export_rows(self, filters: InboxFilter, limit: int = 100_000) -> list[InboxRow]:
        """Every row the filter selects (for the CSV export), newest first."""
        self.sync_meta()
        where, params = filters.where()
        rows = self.query("SELECT " + _META_COLUMNS + " FROM result_meta" + where +
                          " ORDER BY created_at DESC, result_id DESC LIMIT ?", [*params, limit])
        return [InboxRow(*r[:7], bool(r[7]), *r[8:]) for r in rows]

    def facets(self) -> dict[str, list[str]]:
        """Known sites and devices for the filter menus."""
        return {"sites": [r[0] for r in self.query("SELECT DISTINCT site FROM result_meta ORDER BY site")],
                "devices": [r[0] for r in self.query("SELECT DISTINCT device_id FROM result_meta ORDER BY device_id")]}

    # -- one result -------------------------------------------------------------------------------
    def result(self, result_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT payload, site, received_at FROM results WHERE result_id = ?", (result_id,))
        if not rows:
            return None
        result = json.loads(rows[0][0])
        result["_site"], result["_received_at"] = rows[0][1], rows[0][2]
        return result

    def reviews(self, result_id: str) -> list[dict[str, Any]]:
        rows = self.query("SELECT id, at, user_name, action, changes, comment FROM reviews WHERE result_id = ?"
                          " ORDER BY at, id", (result_id,))
        return [{"id": r[0], "at": r[1], "user": r[2], "action": r[3], "changes": json.loads(r[4]), "comment": r[5]}
                for r in rows]

    def add_review(self, result_id: str, user: str, action: str, changes: dict[str, Any], comment: str) -> str:
        """Append one audited review row and move the result's review state; returns the new state."""
        self.sync_meta()
        state = {"verify": "verified", "amend": "amended"}.get(action)
        statements: list[tuple[str, tuple[Any, ...]]] = [(
            "INSERT INTO reviews (result_id, at, user_name, action, changes, comment) VALUES (?, ?, ?, ?, ?, ?)",
            (result_id, time.time(), user, action, json.dumps(changes, sort_keys=True), comment))]
        if state:
            statements.append(("UPDATE result_meta SET review_state = ? WHERE result_id = ?", (state, result_id)))
        self.execute_many(statements)
        return state or self.query("SELECT review_state FROM result_meta WHERE result_id = ?", (result_id,))[0][0]

    def review_state(self, result_id: str) -> str:
        self.sync_meta()
        rows = self.query("SELECT review_state FROM result_meta WHERE result_id = ?", (result_id,))
        return rows[0][0] if rows else "preliminary"

    # -- devices ----------------------------------------------------------------------------------
    def set_device_status(self, site: str, device_id: str, state: str) -> None:
        """What the retained status topic says now (`online`, or `offline` from the device or its last will)."""
        self.execute("INSERT INTO device_status (site, device_id, state, changed_at) VALUES (?, ?, ?, ?)"
                     " ON CONFLICT (site, device_id) DO UPDATE SET state = excluded.state,"
                     " changed_at = excluded.changed_at", (site, device_id, state, time.time()))

    def devices(self, days: int = 14) -> list[dict[str, Any]]:
        """Every device seen on the status topic or in results: state, last result, model, results per day."""
        self.sync_meta()
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for site, device, state, changed in self.query("SELECT site, device_id, state, changed_at FROM device_status"):
            seen[(site, device)] = {"site": site, "device_id": device, "state": state, "changed_at": changed}
        for site, device, n in self.query("SELECT site, device_id, COUNT(*) FROM result_meta GROUP BY site, device_id"):
            entry = seen.setdefault((site, device), {"site": site, "device_id": device, "state": "unknown",
                                                     "changed_at": None})
            entry["results"] = n
        since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - (days - 1) * 86400))
        for entry in seen.values():
            entry.setdefault("results", 0)
            last = self.query("SELECT r.result_id, r.created_at, r.payload FROM result_meta m JOIN results r"
                              " ON r.result_id = m.result_id WHERE m.site = ? AND m.device_id = ?"
                              " ORDER BY m.created_at DESC LIMIT 1", (entry["site"], entry["device_id"]))
            if last:
                payload = json.loads(last[0][2])
                entry["last_result"] = {"result_id": last[0][0], "created_at": last[0][1]}
                entry["model"] = payload.get("model") or {}
            per_day = dict(self.query(
                "SELECT substr(created_at, 1, 10), COUNT(*) FROM result_meta WHERE site = ? AND device_id = ?"
                " AND created_at >= ? GROUP BY substr(created_at, 1, 10)", (entry["site"], entry["device_id"], since)))
            entry["per_day"] = [(time.strftime("%Y-%m-%d", time.gmtime(time.time() - d * 86400)),
                                 per_day.get(time.strftime("%Y-%m-%d", time.gmtime(time.time() - d * 86400)), 0))
                                for d in range(days - 1, -1, -1)]
        return sorted(seen.values(), key=lambda e: (e["site"], e["device_id"]))
