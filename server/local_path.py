"""The whole delivery path on one machine, for `smearscope demo`: a private Mosquitto, server, publisher.

    with LocalDeliveryPath(out_dir, device_id="demo-scope") as path:
        loop(publisher=path.publisher)          # any code that calls publish(result), and close()
    print(path.summary)                          # after exit: every result drained and stored

The broker is Mosquitto (runtime.delivery.mosquitto starts one on a free loopback port, with its
files in `<out_dir>/broker`); the server's SQLite database is `<out_dir>/server.sqlite3` and the
device's outbox `<out_dir>/outbox.sqlite3`.

The path owns the MQTT publisher (`path.mqtt`). The device gets `path.publisher`, whose `close()`
only says the device is done: a device closes its publisher as it stops, usually while its last
result still awaits a receipt, and the path must go on resending and hearing receipts until exit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from runtime.contracts.errors import SmearscopeError
from runtime.delivery.mosquitto import LocalMosquitto
from runtime.delivery.connection import MqttSettings
from runtime.delivery.publisher import DeliverySettings, MqttPublisher
from runtime.delivery.outbox import Outbox
from server.config import ServerConfig
from server.service import ResultServer


class DeviceSide:
    """The publisher handed to the device: `publish` queues durably; `close` leaves delivery running."""

    def __init__(self, mqtt: MqttPublisher) -> None:
        self._mqtt = mqtt
        self.closed = False

    def publish(self, result: Mapping[str, Any]) -> None:
        if self.closed:
            raise SmearscopeError("the device closed its publisher; no more results are accepted")
        self._mqtt.publish(result)

    def publish_with_field_image(self, result: Mapping[str, Any], frame: Any) -> None:
        """The result and its field image (to the demo server's image folder, `<out>/images`)."""
        if self.closed:
            raise SmearscopeError("the device closed its publisher; no more results are accepted")
        self._mqtt.publish_with_field_image(result, frame)

    def close(self) -> None:
        self.closed = True


class LocalDeliveryPath:
    """Start broker and server on enter; on exit wait for every receipt, then stop everything."""

    def __init__(self, out_dir: str | Path, device_id: str = "demo-scope", site: str = "demo",
                 drain_timeout_s: float = 60.0, resend_after_s: float = 5.0) -> None:
        self.out_dir = Path(out_dir)
        self.device_id, self.site, self.drain_timeout_s = device_id, site, drain_timeout_s
        self.resend_after_s = resend_after_s
        self.database = self.out_dir / "server.sqlite3"
        self.summary: dict[str, int] = {}

    def __enter__(self) -> "LocalDeliveryPath":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.broker = LocalMosquitto(self.out_dir / "broker").start()
        config = ServerConfig.from_dict({"broker": {"port": self.broker.port, "client_id": "demo-server"},
                                         "database": f"sqlite:///{self.database}", "share_group": None},
                                        base_dir=self.out_dir)
        self.server = ResultServer(config)
        self.server.start()
        settings = MqttSettings(port=self.broker.port, client_id=f"device-{self.device_id}")
        self.mqtt = MqttPublisher(settings, site=self.site, device_id=self.device_id,
                                  outbox=Outbox(self.out_dir / "outbox.sqlite3"),
                                  delivery=DeliverySettings(resend_after_s=self.resend_after_s))
        self.publisher = DeviceSide(self.mqtt)
        deadline = time.monotonic() + 10
        while not (self.server.is_ready() and self.mqtt.is_ready()):  # both subscriptions acknowledged
            if time.monotonic() > deadline:
                self._stop()
                raise SmearscopeError(f"Mosquitto on port {self.broker.port} did not accept the demo's connections")
            time.sleep(0.02)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        drained = self.mqtt.wait_drained(self.drain_timeout_s if exc is None else 2.0)
        self.summary = {"sent": self.mqtt.stats.sent, "receipts": self.mqtt.stats.receipts,
                        "left_in_outbox": self.mqtt.outbox.depth(),
                        "stored": self.server.store.counts()["results"],
                        "media_parts_sent": self.mqtt.stats.media_sent,
                        "field_images": self.server.store.query(
                            "SELECT COUNT(*) FROM result_images WHERE kind = 'field'")[0][0]}
        self._stop()
        if exc is None and not drained:
            raise SmearscopeError(f"{self.summary['left_in_outbox']} result(s) still await a receipt; "
                                  f"they stay in {self.out_dir / 'outbox.sqlite3'}")

    def _stop(self) -> None:
        for stop in (getattr(getattr(self, "mqtt", None), "close", None),
                     getattr(getattr(self, "server", None), "stop", None), self.broker.stop):
            if stop is not None:
                stop()
