"""Real infrastructure for the delivery tests: test certificates, a private Mosquitto on a free
loopback port (configured from deploy/mosquitto.conf), a private PostgreSQL, valid result/1
messages, server configs, and a device process (`python tests/mqtt_helpers.py device ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from runtime.delivery.mosquitto import find_mosquitto, free_port  # noqa: E402

MOSQUITTO = find_mosquitto()
SITE = "lab1"
SERVER_CN = "smearscope-server"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def make_certs(out: Path, devices: list[str]) -> Path:
    """Run deploy/make-certs.sh (the deployment script itself) into `out`."""
    subprocess.run(["bash", str(REPO_ROOT / "deploy" / "make-certs.sh"), str(out), *devices],
                   check=True, capture_output=True)
    return out


def make_result(device_id: str, seq: int, *, patient_id: str | None = None, labs: dict[str, Any] | None = None,
                created_at: str | None = None, sample_id: str | None = None) -> dict[str, Any]:
    """A valid result/1 message (checked against the schema by the caller's publish path)."""
    from runtime.contracts.ids import uuid7

    sample: dict[str, Any] = {"sample_id": sample_id or f"S-{seq:06d}", "field_index": 0}
    if patient_id is not None:
        sample["patient_id"] = patient_id
    if labs is not None:
        sample["labs"] = labs
    return {
        "schema": "result/1",
        "result_id": uuid7(),
        "device_id": device_id,
        "seq": seq,
        "created_at": created_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sample": sample,
        "model": {"name": "unet-test", "version": "0", "sha256": "0" * 64},
        "quality": {"accepted": True, "reasons": []},
        "counts": {"rbc": 100 + seq % 50, "wbc": seq % 3, "platelet": 7},
        "area_pct": {"background": 50.0, "rbc": 45.0, "wbc": 3.0, "platelet": 2.0},
        "timings_ms": {"total": 1.0},
    }


class Mosquitto:
    """The product's private-broker launcher (runtime.delivery.mosquitto.LocalMosquitto) configured from
    deploy/mosquitto.conf itself: TLS with client certificates, the deployment ACL, persistence."""

    def __init__(self, workdir: Path, certs: Path, port: int | None = None, autosave_s: int = 1) -> None:
        from runtime.delivery.mosquitto import LocalMosquitto

        if MOSQUITTO is None:
            raise RuntimeError("mosquitto binary not found")
        acl = workdir / "smearscope.acl"
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / "deploy" / "smearscope.acl", acl)
        conf = (REPO_ROOT / "deploy" / "mosquitto.conf").read_text().replace("{", "{{").replace("}", "}}")
        conf = (conf.replace("/etc/mosquitto/certs/", f"{certs}/")
                .replace("/etc/mosquitto/smearscope.acl", str(acl))
                .replace("/var/lib/mosquitto/", "{data}/")
                .replace("listener 8883", "listener {port} 127.0.0.1")
                .replace("autosave_interval 2", f"autosave_interval {autosave_s}"))
        self._broker = LocalMosquitto(workdir, conf, port)
        self.workdir, self.port, self.config = workdir, self._broker.port, self._broker.config_path

    @property
    def starts(self) -> int:
        return self._broker.starts

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._broker.proc

    def start(self) -> None:
        self._broker.start()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final persistence save."""
        self._broker.kill()

    def stop(self) -> None:
        self._broker.stop()

    def log(self) -> str:
        return self._broker.log()


def tls_settings(certs: Path, name: str, port: int, client_id: str | None = None, **kw: Any):
    from runtime.delivery.connection import MqttSettings, TlsFiles

    return MqttSettings(host="127.0.0.1", port=port, client_id=client_id or name,
                        tls=TlsFiles(certs / "ca.crt", certs / f"{name}.crt", certs / f"{name}.key"),
                        reconnect_min_s=1, reconnect_max_s=2, **kw)


def write_server_config(path: Path, certs: Path, port: int, database: str, share_group: str | None = "servers",
                        max_payload_bytes: int = 64 * 1024, client_id: str = SERVER_CN) -> Path:
    config = {
        "broker": {"host": "127.0.0.1", "port": port, "client_id": client_id,
                   "ca_file": str(certs / "ca.crt"), "cert_file": str(certs / f"{SERVER_CN}.crt"),
                   "key_file": str(certs / f"{SERVER_CN}.key"), "keepalive_s": 5},
        "database": database,
        "share_group": share_group,
        "max_payload_bytes": max_payload_bytes,
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def start_server_process(config: Path, log_path: Path, env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "smearscope", "serve", "-v", "--config", str(config)],
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)


def start_device_process(certs: Path, port: int, device: str, outbox: Path, count: int, events: Path,
                         log_path: Path, interval_s: float = 0.01, resend_after_s: float = 3.0,
                         image_part_bytes: int = 0) -> subprocess.Popen[bytes]:
    """A device process; with `image_part_bytes` every result also carries its field image (`field_frame`)
    in media parts of at most that many bytes."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "device", "--certs", str(certs), "--port", str(port),
           "--device", device, "--outbox", str(outbox), "--count", str(count), "--events", str(events),
           "--interval", str(interval_s), "--resend-after", str(resend_after_s),
           "--image-part-bytes", str(image_part_bytes)]
    return subprocess.Popen(cmd, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), cwd=REPO_ROOT)


def stored_ids(db_path: Path) -> list[tuple[str, int]]:
    import sqlite3

    if not db_path.exists():
        return []
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as db:
        try:
            return db.execute("SELECT result_id, seq FROM results").fetchall()
        except sqlite3.OperationalError:
            return []


def outbox_depth(path: Path) -> int:
    import sqlite3

    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def receipted_count(path: Path) -> int:
    """Results the device holds a server receipt for: its outbox's durable `receipted` table,
    written in the same transaction that removes the row (the event log's 'receipt' line comes
    after it, so a SIGKILL between the two can lose that line but never the receipt)."""
    import sqlite3

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT COUNT(*) FROM receipted").fetchone()[0]


def enqueued_count(path: Path) -> int:
    """seq of the last result the device queued, plus one (seqs start at 0)."""
    import sqlite3

    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        try:
            row = db.execute("SELECT MAX(s) FROM (SELECT MAX(seq) s FROM outbox UNION ALL "
                             "SELECT MAX(seq) FROM receipted)").fetchone()
        except sqlite3.OperationalError:
            return 0
    return 0 if row[0] is None else row[0] + 1


# -- PostgreSQL ------------------------------------------------------------------------------------
def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """A throwaway PostgreSQL cluster in a temp dir, run as a non-root user when we are root."""

    def __init__(self) -> None:
        import tempfile

        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found")
        self.bindir = bindir
        # Its own top-level temp dir: the server may have to run as another user, who must reach it.
        self.workdir = Path(tempfile.mkdtemp(prefix="smearscope-pg-"))
        self.port = free_port()
        self.data = self.workdir / "pgdata"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.workdir, "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, cwd="/")

    def start(self) -> str:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.resume()
        return self.url

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def halt(self) -> None:
        """An outage: stop at once (no clean shutdown), connections cut."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.workdir / "pg.log"), "-w",
                  "-o", f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=on", "start")

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, cwd="/")
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- the device process ----------------------------------------------------------------------------
def field_frame(seq: int):
    """A distinct real field for every seq: a bundled frame with the seq written on it."""
    import cv2

    frames = sorted((REPO_ROOT / "runtime" / "capture" / "frames" / "images").glob("*.jpg"))
    frame = cv2.imread(str(frames[seq % len(frames)]))
    cv2.putText(frame, f"seq {seq}", (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
    return frame


def device_main(argv: list[str]) -> int:
    """A device that queues `count` results (seq 0..count-1, continuing after a restart), then
    waits until every one has its receipt. Its events go to an append-only log."""
    parser = argparse.ArgumentParser()
    for opt in ("--certs", "--device", "--outbox", "--events"):
        parser.add_argument(opt, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--resend-after", type=float, default=3.0)
    parser.add_argument("--image-part-bytes", type=int, default=0)
    args = parser.parse_args(argv)

    from runtime.delivery.publisher import DeliverySettings, MqttPublisher
    from runtime.delivery.outbox import DEFAULT_MAX_PAYLOAD_BYTES, Outbox

    outbox = Outbox(args.outbox, max_payload_bytes=args.image_part_bytes or DEFAULT_MAX_PAYLOAD_BYTES)
    publisher = MqttPublisher(tls_settings(Path(args.certs), args.device, args.port), site=SITE,
                              device_id=args.device, outbox=outbox, delivery=DeliverySettings(resend_after_s=args.resend_after),
                              event_log=args.events)
    start = outbox.last_seq() + 1
    print(f"device {args.device}: starting at seq {start}, outbox depth {outbox.depth()}", flush=True)
    for seq in range(start, args.count):
        if args.image_part_bytes:
            publisher.publish_with_field_image(make_result(args.device, seq), field_frame(seq))
        else:
            publisher.publish(make_result(args.device, seq))
        time.sleep(args.interval)
    while not publisher.wait_drained(1.0):
        pass
    print(f"device {args.device}: drained; stats {publisher.stats}", flush=True)
    publisher.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "device":
        sys.exit(device_main(sys.argv[2:]))
    sys.exit("usage: mqtt_helpers.py device --certs DIR --port N --device ID --outbox PATH --count N --events PATH")


# -- pytest fixtures (import them into a test module by name) ---------------------------------------
import pytest  # noqa: E402  (after the device entry point's imports on purpose: fixtures only)

DEVICES = ["dev-a", "dev-b"]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    return make_certs(tmp_path_factory.mktemp("certs"), DEVICES)


@pytest.fixture()
def broker(tmp_path: Path, certs: Path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed (apt-get install mosquitto)")
    b = Mosquitto(tmp_path / "broker", certs)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres_url():
    if postgres_bin() is None:
        pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
    pg = Postgres()
    url = pg.start()
    yield url
    pg.stop()
