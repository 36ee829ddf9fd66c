"""The demo's private Mosquitto (runtime.delivery.mosquitto) with the real paho-based publisher and server."""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_helpers import SITE, make_result, wait_for

from runtime.delivery.mosquitto import LocalMosquitto
from runtime.delivery.connection import MqttSettings
from runtime.delivery.publisher import DeliverySettings, MqttPublisher
from runtime.delivery.outbox import Outbox
from server.config import ServerConfig
from server.service import ResultServer


@pytest.fixture()
def broker(local_broker: LocalMosquitto) -> LocalMosquitto:
    return local_broker


def _server(tmp_path: Path, port: int, client_id: str = "server-1") -> ResultServer:
    cfg = ServerConfig.from_dict({"broker": {"port": port, "client_id": client_id},
                                  "database": f"sqlite:///{tmp_path / 'demo.db'}"})
    srv = ResultServer(cfg)
    srv.start()
    wait_for(srv.connection.is_connected, 10, "server connection")
    time.sleep(0.2)
    return srv


def test_device_to_server_through_a_private_mosquitto(tmp_path: Path, broker: LocalMosquitto) -> None:
    srv = _server(tmp_path, broker.port)
    pub = MqttPublisher(MqttSettings(port=broker.port, client_id="dev-a"), site=SITE, device_id="dev-a",
                        outbox=Outbox(tmp_path / "o.db"))
    try:
        for i in range(30):
            pub.publish(make_result("dev-a", i))
        assert pub.wait_drained(20)
        assert srv.store.counts()["results"] == 30 and pub.stats.pubacked >= 30
    finally:
        pub.close()
        srv.stop()


def test_persistent_session_queues_while_the_server_is_away(tmp_path: Path, broker: LocalMosquitto) -> None:
    srv = _server(tmp_path, broker.port)
    srv.stop()  # clean disconnect; the session (and its shared subscription) stays at the broker
    pub = MqttPublisher(MqttSettings(port=broker.port, client_id="dev-a"), site=SITE, device_id="dev-a",
                        outbox=Outbox(tmp_path / "o.db"), delivery=DeliverySettings(resend_after_s=600))
    try:
        for i in range(10):
            pub.publish(make_result("dev-a", i))
        wait_for(lambda: pub.stats.pubacked == 10, 10, "PUBACKs")
        assert pub.outbox.depth() == 10  # PUBACKed, but no receipt yet: still in the outbox
        srv = _server(tmp_path, broker.port)
        assert pub.wait_drained(20)  # no resend needed: the broker queued them for the server's session
        assert pub.stats.sent == 10 and srv.store.counts()["results"] == 10
    finally:
        pub.close()
        srv.stop()


def test_retained_status_and_last_will_with_an_mqtt_311_client(broker: LocalMosquitto) -> None:
    got: list[tuple[bytes, bool]] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watch", protocol=mqtt.MQTTv311)
    watcher.on_message = lambda c, u, m: got.append((m.payload, m.retain))
    dying = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dying", protocol=mqtt.MQTTv5)
    dying.will_set("smearscope/v1/lab1/d/status", b"offline", qos=1, retain=True)
    dying.connect("127.0.0.1", broker.port)
    dying.loop_start()
    dying.publish("smearscope/v1/lab1/d/status", b"online", qos=1, retain=True).wait_for_publish(5)
    watcher.connect("127.0.0.1", broker.port)
    watcher.loop_start()
    watcher.subscribe("smearscope/v1/+/+/status", qos=1)
    wait_for(lambda: got, 5, "retained status")
    assert got[0] == (b"online", True)
    dying.loop_stop()
    dying.socket().close()  # an unclean drop: the will fires
    wait_for(lambda: len(got) > 1, 5, "the will")
    assert got[-1][0] == b"offline"
    watcher.disconnect()
    watcher.loop_stop()


def test_local_delivery_path_for_the_demo(tmp_path: Path) -> None:
    import sqlite3

    from server.local_path import LocalDeliveryPath

    with LocalDeliveryPath(tmp_path, device_id="demo-scope") as path:
        results = [make_result("demo-scope", i) for i in range(5)]
        for r in results:
            path.publisher.publish(r)
    assert path.summary["stored"] == 5 and path.summary["left_in_outbox"] == 0
    with sqlite3.connect(tmp_path / "server.sqlite3") as db:
        ids = {row[0] for row in db.execute("SELECT result_id FROM results")}
    assert ids == {r["result_id"] for r in results}
