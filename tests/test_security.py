"""Security with a real Mosquitto: certificates, per-device ACLs, and hostile payloads.

The broker's ACL (deploy/smearscope.acl) binds topics to the certificate's CN; the server checks
the payload's device_id against the topic and rejects bad payloads with a recorded reason and a
receipt, and keeps running.
"""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_helpers import SITE, broker, certs, make_certs, make_result, wait_for, write_server_config  # noqa: F401

from runtime.delivery.outbox import encode_result
from server.config import ServerConfig
from server.service import ResultServer

pytestmark = pytest.mark.mosquitto
LIMIT = 64 * 1024


class RawClient:
    """A bare paho MQTT 5 client (no outbox, no validation): what a hostile or broken device can do."""

    def __init__(self, port: int, ca: Path | None, cert: Path | None = None, key: Path | None = None,
                 client_id: str = "raw") -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.pubacks: dict[int, int] = {}
        self.subacks: list[int] = []
        self.connack: int | None = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if ca is not None:
            self.c.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None, keyfile=str(key) if key else None,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.c.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc.value)
        self.c.on_message = lambda c, u, m: self.messages.append(m)
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.extend(r.value for r in rcs)
        self.port = port

    def connect(self) -> None:
        self.c.connect("127.0.0.1", self.port, keepalive=10)
        self.c.loop_start()
        wait_for(lambda: self.connack is not None, 10, "CONNACK")
        assert self.connack == 0

    def publish(self, topic: str, payload: bytes) -> int:
        info = self.c.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.pubacks, 10, "PUBACK")
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def device(certs: Path, port: int, name: str) -> RawClient:
    client = RawClient(port, certs / "ca.crt", certs / f"{name}.crt", certs / f"{name}.key", client_id=f"raw-{name}")
    client.connect()
    return client


def results_topic(dev: str) -> str:
    return f"smearscope/v1/{SITE}/{dev}/results"


def receipts_topic(dev: str) -> str:
    return f"smearscope/v1/{SITE}/{dev}/receipts"


@pytest.fixture()
def server(tmp_path: Path, certs: Path, broker):
    cfg = write_server_config(tmp_path / "server.yaml", certs, broker.port, f"sqlite:///{tmp_path / 's.db'}",
                              max_payload_bytes=LIMIT)
    srv = ResultServer(ServerConfig.load(cfg))
    srv.start()
    wait_for(srv.connection.is_connected, 10, "server connection")
    time.sleep(0.3)
    yield srv
    srv.stop()


def test_device_cannot_publish_to_another_devices_topic(certs: Path, broker, server) -> None:
    intruder = device(certs, broker.port, "dev-b")
    try:
        assert intruder.publish(results_topic("dev-a"), encode_result(make_result("dev-a", 1))) == 0x87
        assert intruder.publish(results_topic("dev-b"), encode_result(make_result("dev-b", 2))) < 0x80
        wait_for(lambda: server.processed >= 1, 10, "the permitted message")
        time.sleep(0.5)
        assert server.store.query("SELECT device_id, seq FROM results") == [("dev-b", 2)]
        assert server.processed == 1
    finally:
        intruder.close()


def test_media_topic_is_bound_to_the_device_like_results(certs: Path, broker, server) -> None:
    """The deployment ACL lets a device publish field image parts only under its own name, and lets
    the server read them (the image completes and is linked)."""
    from runtime.delivery.media import split_image

    intruder = device(certs, broker.port, "dev-b")
    try:
        result_id = make_result("dev-b", 3)["result_id"]
        (part,) = split_image(result_id, "field", b"\xff\xd8 not really a jpeg \xff\xd9", "image/jpeg", LIMIT)
        assert intruder.publish(f"smearscope/v1/{SITE}/dev-a/media", part.encode()) == 0x87
        assert intruder.publish(f"smearscope/v1/{SITE}/dev-b/media", part.encode()) < 0x80
        wait_for(lambda: server.store.query("SELECT sha256 FROM result_images WHERE result_id = ?", (result_id,)),
                 10, "the permitted image")
        assert server.processed == 1
    finally:
        intruder.close()


def test_device_cannot_read_another_devices_receipts(certs: Path, broker, server) -> None:
    snoop = device(certs, broker.port, "dev-b")
    owner = device(certs, broker.port, "dev-a")
    try:
        snoop.c.subscribe(receipts_topic("dev-a"), qos=1)
        snoop.c.subscribe("smearscope/v1/+/+/receipts", qos=1)
        owner.c.subscribe(receipts_topic("dev-a"), qos=1)
        wait_for(lambda: len(snoop.subacks) == 2 and owner.subacks, 10, "SUBACKs")
        result = make_result("dev-a", 1)
        assert owner.publish(results_topic("dev-a"), encode_result(result)) < 0x80
        wait_for(lambda: owner.messages, 10, "the owner's receipt")
        assert json.loads(owner.messages[0].payload) == {"result_id": result["result_id"], "status": "stored"}
        time.sleep(0.5)
        assert snoop.messages == []
    finally:
        snoop.close()
        owner.close()


def _refused(client: RawClient) -> bool:
    """True if the broker never lets this client in (TLS handshake or CONNACK refused)."""
    try:
        client.c.connect("127.0.0.1", client.port, keepalive=5)
        client.c.loop_start()
        time.sleep(1.0)
        return client.connack is None or client.connack != 0
    except (ssl.SSLError, OSError):
        return True
    finally:
        client.c.loop_stop()


def test_connection_without_a_valid_certificate_is_refused(tmp_path: Path, certs: Path, broker) -> None:
    rogue = make_certs(tmp_path / "rogue", ["dev-a"])  # same CN, another CA
    assert _refused(RawClient(broker.port, certs / "ca.crt", client_id="no-cert"))
    assert _refused(RawClient(broker.port, certs / "ca.crt", rogue / "dev-a.crt", rogue / "dev-a.key", "rogue"))
    assert _refused(RawClient(broker.port, None, client_id="plain-tcp"))
    good = RawClient(broker.port, certs / "ca.crt", certs / "dev-a.crt", certs / "dev-a.key", "good")
    assert not _refused(good)  # control: the same broker accepts a valid certificate


def test_bad_payloads_are_rejected_with_reason_and_receipt_and_the_server_keeps_running(
        certs: Path, broker, server) -> None:
    dev = device(certs, broker.port, "dev-a")
    try:
        dev.c.subscribe(receipts_topic("dev-a"), qos=1)
        wait_for(lambda: dev.subacks, 10, "SUBACK")
        ids = {}
        bad = {
            "not_utf8": encode_result(make_result("dev-a", 1)).replace(b'"S-', b'"\xc3\x28-'),
            "not_json": b'{"schema": "result/1", "result_id": ',
            "schema_version": encode_result({**make_result("dev-a", 3), "schema": "result/0"}),
            "too_large": encode_result({**make_result("dev-a", 4), "derived": {"pad": "x" * (2 * LIMIT)}}),
            "device_mismatch": encode_result(make_result("dev-b", 5)),
        }
        for reason, payload in bad.items():
            ids[reason] = json.loads(payload).get("result_id") if reason in ("schema_version", "too_large",
                                                                             "device_mismatch") else None
            assert dev.publish(results_topic("dev-a"), payload) < 0x80
        wait_for(lambda: len(dev.messages) >= len(bad), 15, "one receipt per bad message")
        receipts = [json.loads(m.payload) for m in dev.messages]
        assert sorted(r["reason"] for r in receipts) == sorted(bad)
        for r in receipts:
            assert r["status"] == "rejected" and r["result_id"] == ids[r["reason"]]
        rows = server.store.query("SELECT reason, detail FROM rejections")
        assert sorted(r[0] for r in rows) == sorted(bad) and all(r[1] for r in rows)
        # Still serving: a good result after all that is stored and receipted.
        good = make_result("dev-a", 9)
        dev.publish(results_topic("dev-a"), encode_result(good))
        wait_for(lambda: len(dev.messages) > len(bad), 10, "the good result's receipt")
        assert json.loads(dev.messages[-1].payload) == {"result_id": good["result_id"], "status": "stored"}
        assert server.connection.network_thread_alive()
    finally:
        dev.close()
