"""Outbox write and MQTT publish stages, against a real broker.

On the device `MqttPublisher.publish(result)` validates the result and writes it to the SQLite
outbox (WAL, synchronous=FULL) before returning; a sender thread then publishes it at QoS 1. So the
`outbox` stage times building the result plus that call, and the `publish` stage the time from
its return until the broker's PUBACK for it. Without a broker, the `outbox` stage times the
outbox write alone and `publish` is reported as not available.

With `--mqtt auto` (the default) a private Mosquitto is started on a free loopback port when the
binary is installed; `--mqtt HOST:PORT` uses a running broker (plain TCP, anonymous).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks.edge_bench.pipeline import Stage, State, module_missing, result_message

DEVICE_ID = "edge-bench"
SITE = "bench"


@dataclass
class Broker:
    host: str
    port: int
    description: str
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None


def start_private_broker(workdir: Path) -> Broker | str:
    """A throw-away Mosquitto on 127.0.0.1 (no persistence); returns the reason when impossible."""
    binary = mosquitto_binary()
    if binary is None:
        return "no MQTT broker: mosquitto is not installed (install it, or give --mqtt HOST:PORT)"
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    log = open(workdir / "mosquitto.log", "wb")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"no MQTT broker: mosquitto exited at start (see {workdir / 'mosquitto.log'})"
        if _reachable("127.0.0.1", port):
            version = subprocess.run([binary, "-h"], capture_output=True, text=True).stdout.splitlines()
            name = version[0].strip() if version else "mosquitto"
            return Broker("127.0.0.1", port, f"private {name} on 127.0.0.1", process)
        time.sleep(0.05)
    process.kill()
    return "no MQTT broker: mosquitto did not open its port within 5 s"


def resolve_broker(spec: str, workdir: Path) -> Broker | str:
    """'auto' (private Mosquitto when installed), 'none', or 'HOST:PORT'."""
    if spec == "none":
        return "no MQTT broker (--mqtt none)"
    if spec == "auto":
        return start_private_broker(workdir)
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        return f"--mqtt: expected auto, none or HOST:PORT, got {spec!r}"
    if not _reachable(host, int(port)):
        return f"no MQTT broker reachable at {host}:{port}"
    return Broker(host, int(port), f"broker at {host}:{port}")


def delivery_stages(
    broker: Broker | str, workdir: Path, model_info: dict[str, Any], sample: Any
) -> tuple[list[Stage], list[Callable[[], None]]]:
    """The `outbox` and `publish` stages for this installation and broker."""
    missing = module_missing("runtime.delivery.outbox") or module_missing("runtime.analysis.result")
    if missing:
        return [Stage("outbox", missing), Stage("publish", missing)], []
    from runtime.delivery.outbox import Outbox

    outbox = Outbox(Path(tempfile.mkdtemp(prefix="outbox-", dir=workdir)) / "outbox.sqlite3")
    seq = iter(range(1, 1 << 62))

    def build(state: State) -> dict[str, Any]:
        return result_message(state, model_info, sample, next(seq), DEVICE_ID)

    mqtt_missing = module_missing("runtime.delivery.publisher")
    if isinstance(broker, str) or mqtt_missing:
        def enqueue(state: State) -> None:
            outbox.enqueue(build(state))

        why = broker if isinstance(broker, str) else mqtt_missing
        return [
            Stage("outbox", "build + validate result/2 (every cell), Outbox.enqueue (SQLite WAL, synchronous=FULL)", enqueue),
            Stage("publish", why),
        ], [outbox.close]

    from runtime.delivery.connection import MqttSettings
    from runtime.delivery.publisher import DeliverySettings, MqttPublisher

    settings = MqttSettings(host=broker.host, port=broker.port, client_id=f"{DEVICE_ID}-{_free_port()}")
    # No server sends receipts here, so nothing leaves the in-flight window: make it large enough.
    publisher = MqttPublisher(settings, site=SITE, device_id=DEVICE_ID, outbox=outbox,
                              delivery=DeliverySettings(window=1 << 20))
    deadline = time.monotonic() + 10.0
    while not publisher.connection.is_connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not publisher.connection.is_connected():
        publisher.close()
        outbox.close()
        return delivery_stages(f"could not connect to the {broker.description}", workdir, model_info, sample)

    def write(state: State) -> None:
        state["expected_pubacks"] = publisher.stats.pubacked + 1
        publisher.publish(build(state))

    def delivered(state: State) -> None:
        target = state["expected_pubacks"]
        limit = time.monotonic() + 10.0
        while publisher.stats.pubacked < target:
            if time.monotonic() > limit:
                raise TimeoutError(f"no PUBACK from the {broker.description} within 10 s")
            time.sleep(0.0002)

    return [
        Stage("outbox", "build + validate result/2 (every cell), MqttPublisher.publish (SQLite outbox write)", write),
        Stage("publish", f"outbox sender, QoS 1 until PUBACK ({broker.description})", delivered),
    ], [publisher.close, outbox.close]
