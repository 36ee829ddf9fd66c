"""Inbox latency with many stored results, on SQLite and on PostgreSQL.

    python -m benchmarks.inbox_bench --results 10000 --requests 200
    python -m benchmarks.inbox_bench --database postgresql://user@host/db

Stores N valid result/1 messages through the subscriber's own store (several sites, devices,
diagnoses, some refused by the quality gate), signs in through the web app, then times full HTTP
requests of the inbox through the framework's test client: the first page, filtered pages and deep
pages. Without --database it measures a temporary SQLite file and, when PostgreSQL binaries are
installed, a private temporary PostgreSQL cluster. Prints p50/p95/max per database.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

QUERIES = ["/", "/?page=2", "/?page=150", "/?needs_review=1", "/?status=diabetes", "/?site=lab2",
           "/?device=dev-3&from=2026-02-01&to=2026-02-28", "/?review=preliminary&page=40"]
STATUSES = ["normal", "prediabetes", "diabetes", "indeterminate", None]


def _result(i: int, rng: random.Random) -> tuple[str, dict[str, Any]]:
    from runtime.contracts.ids import uuid7

    status = STATUSES[i % len(STATUSES)]
    day = 1 + i % 28
    result: dict[str, Any] = {
        "schema": "result/1", "result_id": uuid7(), "device_id": f"dev-{i % 7}", "seq": i,
        "created_at": f"2026-{1 + i % 12:02d}-{day:02d}T{i % 24:02d}:{i % 60:02d}:{(i // 60) % 60:02d}Z",
        "sample": {"sample_id": f"S-{i:06d}", "patient_id": f"p-{i % 900:04d}", "field_index": 0,
                   "labs": {"fpg_mmol_l": round(rng.uniform(4.5, 9.0), 1)}},
        "model": {"name": "segmentation", "version": "3", "sha256": "a" * 64},
        "quality": {"accepted": i % 11 != 0, "reasons": [] if i % 11 else ["out of focus"]},
        "counts": {"rbc": rng.randint(60, 140), "wbc": rng.randint(0, 3), "platelet": rng.randint(0, 12)},
        "area_pct": {"background": 50.0, "rbc": 45.0, "wbc": 3.0, "platelet": 2.0},
        "timings_ms": {"total": 300.0},
    }
    if status:
        result["diagnosis"] = {"guideline": "who", "status": status, "criteria": [], "flags": []}
    return f"lab{1 + i % 3}", result


def fill(db: Any, n: int, seed: int = 0) -> None:
    from server.validation import Accepted, check_message

    rng = random.Random(seed)
    for i in range(n):
        site, result = _result(i, rng)
        checked = check_message(f"smearscope/v1/{site}/{result['device_id']}/results",
                                json.dumps(result).encode(), 262144)
        assert isinstance(checked, Accepted), checked
        db.store.record(checked)


def measure(database: str, n: int, requests: int, workdir: Path) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from server.config import ServerConfig
    from server.store import Store
    from server.web.app import create_app
    from server.web.auth import Accounts
    from server.web.db import Database

    config = ServerConfig.from_dict({"database": database, "web": {"images_dir": str(workdir / "images")}},
                                    base_dir=workdir)
    db = Database(Store(config.database_url()))
    have = db.query("SELECT COUNT(*) FROM results")[0][0]
    t0 = time.perf_counter()
    if have < n:
        fill(db, n - have)
    fill_s = time.perf_counter() - t0
    if not db.query("SELECT 1 FROM users WHERE name = 'bench'"):
        Accounts(db).add("bench", "bench password", "viewer")
    client = TestClient(create_app(config, db))
    login = client.get("/login").text
    token = login.split('name="csrf" value="')[1].split('"')[0]
    client.post("/login", data={"username": "bench", "password": "bench password", "csrf": token},
                follow_redirects=False)
    t0 = time.perf_counter()
    first = client.get("/")
    index_s = time.perf_counter() - t0  # the first view indexes every stored result once
    assert first.status_code == 200 and f"{n} results" in first.text, first.text[:300]
    times = []
    for i in range(requests):
        url = QUERIES[i % len(QUERIES)]
        t = time.perf_counter()
        response = client.get(url)
        times.append(1000 * (time.perf_counter() - t))
        assert response.status_code == 200, url
    db.close()
    times.sort()
    return {"results": n, "fill_s": round(fill_s, 1), "first_view_s": round(index_s, 2),
            "p50_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
            "max_ms": round(times[-1], 1), "requests": requests}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database", help="one database URL instead of temporary SQLite + PostgreSQL")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="inbox-bench-") as tmp:
        workdir = Path(tmp)
        targets: list[tuple[str, str]] = []
        pg = None
        if args.database:
            targets.append(("given", args.database))
        else:
            targets.append(("sqlite", f"sqlite:///{workdir / 'bench.sqlite3'}"))
            from tests.mqtt_helpers import Postgres, postgres_bin

            if postgres_bin() is not None:
                pg = Postgres()
                targets.append(("postgresql", pg.start()))
            else:
                print("PostgreSQL binaries not found: measuring SQLite only", file=sys.stderr)
        try:
            for name, url in targets:
                stats = measure(url, args.results, args.requests, workdir)
                print(json.dumps({"database": name, **stats}))
        finally:
            if pg is not None:
                pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
