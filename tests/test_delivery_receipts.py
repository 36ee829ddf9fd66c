"""Receipts must reach the outbox: the timings that once left a stored result `pending` on the device.

Both tests force the timing with a real Mosquitto and the real server instead of waiting for a
loaded machine to produce it: the server is down while the device finishes, or a proxy in front of
the broker lets the device's subscriptions reach it only seconds after the SUBSCRIBE.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from mqtt_helpers import make_result, wait_for
from mqtt_proxy import SubscribeDelayProxy
from runtime.delivery.mosquitto import LocalMosquitto
from runtime.delivery.connection import MqttSettings
from runtime.delivery.publisher import DeliverySettings, MqttPublisher
from runtime.delivery.outbox import Outbox
from server.config import ServerConfig
from server.service import ResultServer


def _attempts(outbox_path: Path) -> int:
    with sqlite3.connect(outbox_path) as db:
        row = db.execute("SELECT COALESCE(SUM(attempts), 0) FROM outbox").fetchone()
    return int(row[0])


def _receipted(outbox_path: Path) -> dict[str, str]:
    with sqlite3.connect(outbox_path) as db:
        return dict(db.execute("SELECT result_id, outcome FROM receipted").fetchall())


@pytest.mark.timeout(90)
def test_demo_path_drains_after_the_device_closes_its_publisher(tmp_path: Path) -> None:
    """A device closes its publisher as it stops; its last receipt may come later and must still count."""
    from server.local_path import LocalDeliveryPath

    outbox = tmp_path / "outbox.sqlite3"
    result = make_result("demo-scope", 0)
    with LocalDeliveryPath(tmp_path, device_id="demo-scope", drain_timeout_s=15.0) as path:
        config = path.server.config
        path.server.stop()  # no receipt can come before the device closes: the server is down
        path.publisher.publish(result)
        wait_for(lambda: _attempts(outbox) >= 1, 10, "the result to be sent")
        path.publisher.close()  # what Device.close() does at the end of the demo
        path.server = ResultServer(config)  # back up: the broker hands it the queued result
        path.server.start()
    assert path.summary["stored"] == 1 and path.summary["left_in_outbox"] == 0
    assert _receipted(outbox) == {result["result_id"]: "stored"}


@pytest.mark.timeout(90)
def test_no_result_is_sent_before_the_receipts_subscription_is_acknowledged(tmp_path: Path,
                                                                           local_broker: LocalMosquitto) -> None:
    """A receipt published before the device's subscription is active is dropped by the broker; the
    device must not send until the SUBACK, so no receipt waits for a resend (here: 60 s)."""
    proxy = SubscribeDelayProxy(local_broker.port, delay_s=3.0).start()  # the device's way to the broker
    config = ServerConfig.from_dict({"broker": {"port": local_broker.port, "client_id": "server-1"},
                                     "database": f"sqlite:///{tmp_path / 'server.sqlite3'}", "share_group": None})
    server = ResultServer(config)
    server.start()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    results = [make_result("dev-a", i) for i in range(5)]
    for r in results:  # a backlog from before a restart: the sender sends as soon as it may
        outbox.enqueue(r)
    publisher = None
    try:
        wait_for(server.is_ready, 10, "the server's subscription")
        publisher = MqttPublisher(MqttSettings(port=proxy.port), site="lab", device_id="dev-a", outbox=outbox,
                                  delivery=DeliverySettings(resend_after_s=60.0), event_log=tmp_path / "events.log")
        drained = publisher.wait_drained(15.0)
        events = [line.split()[1] for line in (tmp_path / "events.log").read_text().splitlines()]
        assert drained, f"receipts lost: {publisher.stats}; events {events}"
        assert publisher.stats.resends == 0 and publisher.stats.sent == len(results)
        assert events.index("subscribed") < events.index("sent")
        assert set(_receipted(tmp_path / "outbox.sqlite3").values()) == {"stored"}
    finally:
        if publisher is not None:
            publisher.close()
        server.stop()
        proxy.stop()


@pytest.mark.timeout(30)
def test_a_closed_publisher_reports_undrained_at_once(tmp_path: Path, local_broker: LocalMosquitto) -> None:
    """Nothing can drain a closed publisher's outbox, so waiting for it must not take the whole timeout."""
    broker = local_broker
    publisher = MqttPublisher(MqttSettings(port=broker.port), site="lab", device_id="dev-a",
                              outbox=Outbox(tmp_path / "outbox.sqlite3"))
    try:
        wait_for(publisher.is_ready, 10, "the device's receipts subscription")
        publisher.publish(make_result("dev-a", 0))  # no server: no receipt will come
        publisher.close()
        start = time.monotonic()
        assert publisher.wait_drained(20.0) is False
        assert time.monotonic() - start < 1.0
        assert publisher.outbox.depth() == 1  # the row stays for the next start
    finally:
        publisher.close()
