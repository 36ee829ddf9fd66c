"""The delivery guarantee under fire, with real processes and a real Mosquitto on loopback.

1000 results from a device process while the broker is SIGKILLed and restarted three times, the
device is SIGKILLed (with rows in its outbox) and restarted twice, and the server is SIGKILLed once
between commit and ack: the database must hold exactly 1000 distinct results, none lost, none twice.
A sibling runs 200 results that each carry their field image (media parts through the same outbox)
through broker, device and server kills: every image must be stored exactly once, byte-identical.
Run with `pytest -m slow tests/test_delivery_faults.py -s` to see the figures.
"""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from mqtt_helpers import (MOSQUITTO, Mosquitto, certs, enqueued_count, field_frame, outbox_depth, receipted_count,  # noqa: F401
                          start_device_process, start_server_process, stored_ids, wait_for, write_server_config)

from runtime.delivery.media import encode_jpeg
from runtime.delivery.publisher import MediaSettings
from server.images import ImageStore
from server.service import CRASH_AFTER_COMMITS_ENV

pytestmark = [pytest.mark.mosquitto, pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")]

DEVICE = "dev-a"


class Rig:
    """Broker, server and device processes plus the files they share."""

    def __init__(self, tmp: Path, certs: Path, count: int, interval_s: float, resend_after_s: float,
                 image_part_bytes: int = 0) -> None:
        self.tmp, self.certs, self.count, self.image_part_bytes = tmp, certs, count, image_part_bytes
        self.interval_s, self.resend_after_s = interval_s, resend_after_s
        self.broker = Mosquitto(tmp / "broker", certs, autosave_s=1)
        self.db = tmp / "server.sqlite3"
        self.server_config = write_server_config(tmp / "server.yaml", certs, self.broker.port, f"sqlite:///{self.db}")
        self.outbox = tmp / "outbox.sqlite3"
        self.events = tmp / "device-events.log"
        self.server: subprocess.Popen[bytes] | None = None
        self.device: subprocess.Popen[bytes] | None = None
        self.device_starts = 0

    def start_server(self, crash_after: int | None = None) -> None:
        env = {CRASH_AFTER_COMMITS_ENV: str(crash_after)} if crash_after else {}
        self.server = start_server_process(self.server_config, self.tmp / "server.log", env)

    def start_device(self) -> None:
        self.device = start_device_process(self.certs, self.broker.port, DEVICE, self.outbox, self.count, self.events,
                                           self.tmp / "device.log", self.interval_s, self.resend_after_s,
                                           self.image_part_bytes)
        self.device_starts += 1

    def kill_device(self) -> int:
        assert self.device is not None
        self.device.send_signal(signal.SIGKILL)
        self.device.wait()
        return outbox_depth(self.outbox)

    def queued(self) -> int:
        return enqueued_count(self.outbox)

    def shutdown(self) -> None:
        for proc in (self.device, self.server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        self.broker.stop()

    def logs(self) -> str:
        parts = []
        for name in ("device.log", "server.log"):
            p = self.tmp / name
            parts.append(f"--- {name}\n" + (p.read_text(errors="replace")[-3000:] if p.exists() else ""))
        return "\n".join(parts) + "\n--- mosquitto\n" + self.broker.log()[-2000:]


def event_figures(events: Path) -> dict[str, int]:
    """Counts from the device's append-only event log (it survives SIGKILL)."""
    figures = {"sent": 0, "pubacked": 0, "receipts": 0, "connects": 0, "max_outbox_depth": 0}
    for line in events.read_text().splitlines():
        fields = line.split()
        kind = fields[1]
        if kind == "sent":
            figures["sent"] += 1
        elif kind == "puback":
            figures["pubacked"] += 1
        elif kind == "receipt":
            figures["receipts"] += 1
        elif kind == "connect":
            figures["connects"] += 1
        elif kind == "enqueue":
            figures["max_outbox_depth"] = max(figures["max_outbox_depth"], int(fields[3]))
    return figures


def check_exactly_once(db: Path, count: int) -> None:
    rows = stored_ids(db)
    ids = [r[0] for r in rows]
    seqs = sorted(r[1] for r in rows)
    assert len(ids) == len(set(ids)), "a result_id was stored twice"
    missing = sorted(set(range(count)) - set(seqs))
    assert not missing, f"lost results: seq {missing[:20]}"
    assert seqs == list(range(count)), "a capture was stored under two result ids"


def duplicates_absorbed(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT COUNT(*) FROM deliveries WHERE outcome = 'duplicate'").fetchone()[0]


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_thousand_results_survive_broker_device_and_server_kills(tmp_path: Path, certs: Path) -> None:
    count = 1000
    rig = Rig(tmp_path, certs, count, interval_s=0.015, resend_after_s=3.0)
    rig.broker.start()
    try:
        rig.start_server(crash_after=120)
        rig.start_device()

        # Server: SIGKILLed by its own fault hook right after commit 120, before that message's ack.
        wait_for(lambda: rig.server.poll() is not None, 60, "the server's fault injection")
        assert rig.server.returncode == -signal.SIGKILL, rig.logs()
        rig.start_server()

        # Broker kill 1 while results keep coming.
        wait_for(lambda: rig.queued() >= 250, 60, "250 queued")
        rig.broker.kill()
        time.sleep(1.5)
        rig.broker.start()

        # Broker kill 2, then the device is killed with rows in its outbox.
        wait_for(lambda: rig.queued() >= 450, 60, "450 queued")
        rig.broker.kill()
        wait_for(lambda: outbox_depth(rig.outbox) >= 30, 30, "outbox to fill while the broker is down")
        depth_kill_1 = rig.kill_device()
        rig.broker.start()
        rig.start_device()

        # Broker kill 3 and device kill 2; the device comes back before the broker does.
        depth_kill_2, drain_s = _last_faults_then_drain(rig, 700, count)

        assert depth_kill_1 > 0 and depth_kill_2 > 0
        check_exactly_once(rig.db, count)
        figures = event_figures(rig.events)
        figures.update(
            stored=len(stored_ids(rig.db)),
            duplicates_absorbed=duplicates_absorbed(rig.db),
            device_reconnects=figures["connects"] - rig.device_starts,
            server_reconnects=(rig.tmp / "server.log").read_text().count("connected to broker") - 2,
            outbox_depth_at_device_kills=f"{depth_kill_1}, {depth_kill_2}",
            drain_s_after_last_restart=round(drain_s, 2),
            broker_kills=3, device_kills=2, server_kills=1,
        )
        print("\ndelivery under faults:", ", ".join(f"{k}={v}" for k, v in figures.items()))
        assert figures["stored"] == count
        assert receipted_count(rig.outbox) == count  # every result's receipt, on disk
        # the event log's lines: each device kill can take the line of a receipt already committed
        assert figures["sent"] >= count and figures["receipts"] >= count - 2
    finally:
        rig.shutdown()


def check_images_exactly_once(db: Path, images: ImageStore, count: int) -> dict[str, int]:
    """Every result has its field image linked once, stored once, byte-identical to what the device encoded."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        seq_of = dict(conn.execute("SELECT result_id, seq FROM results").fetchall())
        links = conn.execute("SELECT result_id, sha256 FROM result_images WHERE kind = 'field'").fetchall()
        stored = conn.execute("SELECT result_id, COUNT(*) FROM deliveries WHERE outcome = 'media:stored'"
                              " GROUP BY result_id").fetchall()
        dup = conn.execute("SELECT COUNT(*) FROM deliveries WHERE outcome = 'media:duplicate'").fetchone()[0]
        rejected = conn.execute("SELECT COUNT(*) FROM deliveries WHERE outcome LIKE 'media:rejected%'").fetchone()[0]
        left = conn.execute("SELECT COUNT(*) FROM media_parts").fetchone()[0]
    assert len(links) == count and {rid for rid, _ in links} == set(seq_of), "a result lacks its image"
    quality = MediaSettings().jpeg_quality
    for rid, sha in links:
        expected = hashlib.sha256(encode_jpeg(field_frame(seq_of[rid]), quality)).hexdigest()
        assert sha == expected, f"seq {seq_of[rid]}: linked image is not the one the device encoded"
        data = images.get(sha)
        assert data is not None and hashlib.sha256(data).hexdigest() == expected
    files = [p for p in images.root.rglob("*") if p.is_file()]
    assert len(files) == count, f"{len(files)} files in the image store for {count} images"
    assert all(n == 1 for _, n in stored), "a media part was stored twice"
    assert rejected == 0 and left == 0
    return {"images_linked": len(links), "image_files": len(files), "parts_stored": len(stored),
            "part_duplicates_absorbed": dup}


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_two_hundred_results_with_images_survive_broker_device_and_server_kills(tmp_path: Path, certs: Path) -> None:
    count = 200
    rig = Rig(tmp_path, certs, count, interval_s=0.05, resend_after_s=3.0, image_part_bytes=8 * 1024)
    rig.broker.start()
    try:
        rig.start_server(crash_after=100)  # about 20 results with their parts in
        rig.start_device()
        wait_for(lambda: rig.server.poll() is not None, 60, "the server's fault injection")
        assert rig.server.returncode == -signal.SIGKILL, rig.logs()
        rig.start_server()

        wait_for(lambda: rig.queued() >= 60, 60, "60 queued")
        rig.broker.kill()
        time.sleep(1.5)
        rig.broker.start()
        # Each fault below must find the device connected again (else it would test one outage twice).
        wait_for(lambda: event_figures(rig.events)["connects"] >= 2, 30, "the device to reconnect")

        wait_for(lambda: rig.queued() >= 100, 60, "100 queued")
        rig.broker.kill()
        wait_for(lambda: outbox_depth(rig.outbox) >= 30, 30, "outbox to fill while the broker is down")
        depth_kill_1 = rig.kill_device()
        rig.broker.start()
        rig.start_device()
        wait_for(lambda: event_figures(rig.events)["connects"] >= 3, 30, "the restarted device to connect")

        depth_kill_2, drain_s = _last_faults_then_drain(rig, 150, count)

        assert depth_kill_1 > 0 and depth_kill_2 > 0
        check_exactly_once(rig.db, count)
        figures = event_figures(rig.events)
        figures.update(check_images_exactly_once(rig.db, ImageStore(tmp_path / "images"), count))
        figures.update(
            device_reconnects=figures["connects"] - rig.device_starts,
            results_stored=len(stored_ids(rig.db)),
            result_duplicates_absorbed=duplicates_absorbed(rig.db),
            outbox_depth_at_device_kills=f"{depth_kill_1}, {depth_kill_2}",
            drain_s_after_last_restart=round(drain_s, 2),
            broker_kills=3, device_kills=2, server_kills=1,
        )
        print("\ndelivery with images under faults:", ", ".join(f"{k}={v}" for k, v in figures.items()))
    finally:
        rig.shutdown()


def _last_faults_then_drain(rig: Rig, queued_first: int, count: int) -> tuple[int, float]:
    """Once `queued_first` results are queued: kill the broker, let the outbox fill, kill the device
    and restart it before the broker; then wait for every result to be queued and receipted.
    Returns (outbox depth at the device kill, seconds from the broker's restart to the drain)."""
    wait_for(lambda: rig.queued() >= queued_first, 60, f"{queued_first} queued")
    rig.broker.kill()
    wait_for(lambda: outbox_depth(rig.outbox) >= 30, 30, "outbox to fill while the broker is down")
    depth = rig.kill_device()
    rig.start_device()
    time.sleep(1.0)
    rig.broker.start()
    last_restart = time.monotonic()
    wait_for(lambda: rig.queued() == count and outbox_depth(rig.outbox) == 0, 240, "the outbox to drain")
    drain_s = time.monotonic() - last_restart
    assert rig.device.wait(30) == 0, rig.logs()
    time.sleep(0.5)  # let the server finish any redelivered duplicate before reading the counts
    return depth, drain_s
