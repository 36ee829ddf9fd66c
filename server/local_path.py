"""The whole delivery path on one machine, for `smearscope demo`: embedded broker, server, publisher.

    with LocalDeliveryPath(out_dir, device_id="demo-scope") as path:
        loop(publisher=path.publisher)          # any code that calls publish(result)
    print(path.summary)                          # after exit: every result drained and stored

No system packages are needed (the broker is runtime.mqtt.broker); the server's SQLite database is
`<out_dir>/server.sqlite3` and the device's outbox `<out_dir>/outbox.sqlite3`.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from runtime.errors import SmearscopeError
from runtime.mqtt.broker import EmbeddedBroker
from runtime.mqtt.connection import MqttSettings
from runtime.mqtt.publisher import MqttPublisher
from runtime.outbox import Outbox
from server.config import ServerConfig
from server.service import ResultServer


class LocalDeliveryPath:
    """Start broker and server on enter; on exit wait for every receipt, then stop everything."""

    def __init__(self, out_dir: str | Path, device_id: str = "demo-scope", site: str = "demo",
                 drain_timeout_s: float = 60.0) -> None:
        self.out_dir = Path(out_dir)
        self.device_id, self.site, self.drain_timeout_s = device_id, site, drain_timeout_s
        self.database = self.out_dir / "server.sqlite3"
        self.summary: dict[str, int] = {}

    def __enter__(self) -> "LocalDeliveryPath":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker().start()
        config = ServerConfig.from_dict({"broker": {"port": self.broker.port, "client_id": "demo-server"},
                                         "database": f"sqlite:///{self.database}", "share_group": None})
        self.server = ResultServer(config)
        self.server.start()
        settings = MqttSettings(port=self.broker.port, client_id=f"device-{self.device_id}")
        self.publisher = MqttPublisher(settings, site=self.site, device_id=self.device_id,
                                       outbox=Outbox(self.out_dir / "outbox.sqlite3"), resend_after_s=5.0)
        deadline = time.monotonic() + 10
        while not (self.server.connection.is_connected() and self.publisher.connection.is_connected()):
            if time.monotonic() > deadline:
                self._stop()
                raise SmearscopeError("the embedded MQTT broker did not accept the demo's connections")
            time.sleep(0.02)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        drained = self.publisher.wait_drained(self.drain_timeout_s if exc is None else 2.0)
        self.summary = {"sent": self.publisher.stats.sent, "receipts": self.publisher.stats.receipts,
                        "left_in_outbox": self.publisher.outbox.depth(),
                        "stored": self.server.store.counts()["results"]}
        self._stop()
        if exc is None and not drained:
            raise SmearscopeError(f"{self.summary['left_in_outbox']} result(s) still await a receipt; "
                                  f"they stay in {self.out_dir / 'outbox.sqlite3'}")

    def _stop(self) -> None:
        for stop in (getattr(getattr(self, "publisher", None), "close", None),
                     getattr(getattr(self, "server", None), "stop", None), self.broker.stop):
            if stop is not None:
                stop()
