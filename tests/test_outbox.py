"""The device outbox: durable before sending, size limit before queueing, rows leave only on receipt."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mqtt_helpers import REPO_ROOT, make_result

from runtime.delivery.outbox import Outbox, OutboxError, PayloadTooLarge, encode_result


def test_sqlite_is_wal_with_full_sync(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    mode = box._db.execute("PRAGMA journal_mode").fetchone()[0]
    sync = box._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2)  # 2 = FULL


def test_row_leaves_only_on_receipt_and_the_receipt_is_recorded(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    results = [make_result("dev-a", i) for i in range(3)]
    for r in results:
        box.enqueue(r)
    assert box.depth() == 3
    assert [row.seq for row in box.pending(10)] == [0, 1, 2]
    assert box.acknowledge(results[1]["result_id"], "stored") is True
    assert box.acknowledge(results[1]["result_id"], "duplicate") is False  # a late second receipt
    assert box.depth() == 2
    assert box.outcome(results[1]["result_id"]) == "stored"
    assert [row.seq for row in box.pending(10)] == [0, 2]


def test_resend_keeps_the_same_id_and_bytes(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    result = make_result("dev-a", 0)
    payload = box.enqueue(result)
    box.enqueue(result)  # a retry of the same step is not a second row
    assert box.depth() == 1
    assert box.pending(1)[0].payload == payload == encode_result(result)


def test_size_limit_is_enforced_before_queueing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_payload_bytes=2048)
    result = make_result("dev-a", 0)
    result["timings_ms"] = {f"stage_{i}": float(i) for i in range(200)}
    with pytest.raises(PayloadTooLarge, match="limit is 2048"):
        box.enqueue(result)
    assert box.depth() == 0


def test_result_without_id_is_refused(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    with pytest.raises(OutboxError):
        box.enqueue({"seq": 1})


def test_pending_skips_rows_in_flight(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    results = [make_result("dev-a", i) for i in range(5)]
    for r in results:
        box.enqueue(r)
    busy = {results[0]["result_id"], results[1]["result_id"]}
    assert [row.seq for row in box.pending(2, exclude=busy)] == [2, 3]


def test_held_rows_stay_on_disk_until_released(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    r = make_result("dev-a", 0)
    box.enqueue(r)
    box.hold(r["result_id"], "broker refused: not authorised (0x87)")
    assert box.pending(10) == [] and box.depth() == 1
    assert box.held() == [(r["result_id"], "broker refused: not authorised (0x87)")]
    assert box.release_held() == 1
    assert [row.result_id for row in box.pending(10)] == [r["result_id"]]


def test_last_seq_continues_across_restarts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    assert box.last_seq() == -1
    results = [make_result("dev-a", i) for i in range(4)]
    for r in results:
        box.enqueue(r)
    for r in results:
        box.acknowledge(r["result_id"], "stored")
    box.close()
    assert Outbox(tmp_path / "o.db").last_seq() == 3  # all receipted, still remembered


def test_a_queued_row_survives_sigkill(tmp_path: Path) -> None:
    """A process that SIGKILLs itself right after enqueue: the row is on disk."""
    path = tmp_path / "o.db"
    code = (
        "import os, signal, sys; sys.path[:0] = [sys.argv[2], sys.argv[2] + '/tests']\n"
        "from mqtt_helpers import make_result\nfrom runtime.delivery.outbox import Outbox\n"
        "box = Outbox(sys.argv[1]); r = make_result('dev-a', 7); box.enqueue(r); print(r['result_id'], flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(REPO_ROOT)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    rid = proc.stdout.strip()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT result_id, seq FROM outbox").fetchall() == [(rid, 7)]
    assert Outbox(path).depth() == 1
