"""Field images from device to server: the outbox, a real Mosquitto, the real server and its web page.

The device path (MqttPublisher.publish_with_field_image) is exercised end to end; the bad cases
(parts duplicated, out of order, a wrong hash, conflicting bytes, unknown results) are published by
a raw MQTT client, as a faulty or hostile device would, and each part's receipt is read back.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from mqtt_helpers import make_result, wait_for
from runtime.delivery.connection import MqttSettings
from runtime.delivery.media import (HEADER_ALLOWANCE, MediaError, MediaHeader, MediaPart, encode_jpeg, parse_part,
                                    part_key, split_image)
from runtime.delivery.mosquitto import LocalMosquitto
from runtime.delivery.outbox import Outbox, PayloadTooLarge
from runtime.delivery.publisher import MediaSettings, DeliverySettings, MqttPublisher
from server.config import ServerConfig
from server.images import ImageStore, images_for
from server.service import ResultServer

FRAMES = Path(__file__).resolve().parent.parent / "runtime" / "capture" / "frames" / "images"
SITE, DEVICE = "lab1", "dev-a"
PART_BYTES = 4 * 1024  # small parts, so that one field image takes many


def real_frame() -> np.ndarray:
    return cv2.imread(str(sorted(FRAMES.glob("*.jpg"))[0]))


# -- the wire format and the outbox (no broker) ------------------------------------------------------
def test_split_and_parse_round_trip_within_the_message_limit() -> None:
    data = encode_jpeg(real_frame(), 80)
    parts = split_image("0190a0b0-0000-7000-8000-000000000001", "field", data, "image/jpeg", PART_BYTES)
    assert len(parts) == -(-len(data) // (PART_BYTES - HEADER_ALLOWANCE)) and len(parts) > 3
    encoded = [p.encode() for p in parts]
    assert max(len(e) for e in encoded) <= PART_BYTES
    decoded = [parse_part(e) for e in encoded]
    assert b"".join(p.data for p in decoded) == data
    assert {p.header.sha256 for p in decoded} == {hashlib.sha256(data).hexdigest()}
    assert [p.header.part for p in decoded] == list(range(len(parts)))


@pytest.mark.parametrize("payload, reason", [
    (b"no header line at all" * 40, "bad_header"),
    (b'{"schema":"media/9"}\nxx', "schema_version"),
    (b"\xff\xfe\n" + b"x", "bad_header"),
    (json.dumps({"schema": "media/1", "result_id": "../../etc", "kind": "field", "sha256": "0" * 64, "size": 1,
                 "part": 0, "parts": 1, "content_type": "image/jpeg"}).encode() + b"\nx", "bad_header"),
    (json.dumps({"schema": "media/1", "result_id": "0190a0b0-0000-7000-8000-000000000001", "kind": "field",
                 "sha256": "0" * 64, "size": 10, "part": 3, "parts": 2, "content_type": "image/jpeg"}).encode()
     + b"\nx", "bad_header"),
    (json.dumps({"schema": "media/1", "result_id": "0190a0b0-0000-7000-8000-000000000001", "kind": "field",
                 "sha256": "0" * 64, "size": 10 ** 12, "part": 0, "parts": 2, "content_type": "image/jpeg"}).encode()
     + b"\nx", "too_large"),
    (json.dumps({"schema": "media/1", "result_id": "0190a0b0-0000-7000-8000-000000000001", "kind": "field",
                 "sha256": "0" * 64, "size": 1, "part": 0, "parts": 1, "content_type": "image/jpeg"}).encode()
     + b"\nmore bytes than the image has", "bad_part"),
])
def test_parse_refuses_what_is_not_media_1(payload: bytes, reason: str) -> None:
    with pytest.raises(MediaError) as err:
        parse_part(payload)
    assert err.value.reason == reason


def test_outbox_queues_a_result_and_its_parts_together_and_upgrades_an_old_outbox(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with sqlite3.connect(path) as db:  # the schema before media rows existed, with one queued result
        db.execute("CREATE TABLE outbox (result_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, payload BLOB NOT NULL,"
                   " enqueued_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
                   " state TEXT NOT NULL DEFAULT 'pending', note TEXT)")
        db.execute("INSERT INTO outbox (result_id, seq, payload, enqueued_at) VALUES ('old', 0, x'7b7d', 0)")
    outbox = Outbox(path, max_payload_bytes=PART_BYTES)
    result = make_result(DEVICE, 1)
    parts = split_image(result["result_id"], "field", encode_jpeg(real_frame(), 80), "image/jpeg", PART_BYTES)
    outbox.enqueue(result, parts)
    rows = outbox.pending(1000)
    assert [(r.result_id, r.kind) for r in rows[:2]] == [("old", "results"), (result["result_id"], "results")]
    assert [r.result_id for r in rows[2:]] == [part_key(result["result_id"], "field", i) for i in range(len(parts))]
    assert {r.kind for r in rows[2:]} == {"media"} and outbox.depth() == 2 + len(parts)
    assert outbox.acknowledge(part_key(result["result_id"], "field", 0), "stored")
    assert outbox.depth() == 1 + len(parts)
    # A part over the limit refuses the whole enqueue: neither the result nor any part is queued.
    big = make_result(DEVICE, 2)
    header = MediaHeader(big["result_id"], "field", "0" * 64, PART_BYTES * 2, 0, 1, "image/jpeg")
    with pytest.raises(PayloadTooLarge):
        outbox.enqueue(big, [MediaPart(header, b"x" * PART_BYTES)])
    assert big["result_id"] not in {r.result_id for r in outbox.pending(1000)}
    outbox.close()


# -- through Mosquitto to the server -------------------------------------------------------------
class Receipts:
    """A raw device: publishes whatever bytes it is given and collects the receipts sent to it."""

    def __init__(self, port: int, device: str = DEVICE) -> None:
        self.got: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{device}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(f"smearscope/v1/{SITE}/{device}/receipts", qos=1)
        assert self._subscribed.wait(10)
        self.media = f"smearscope/v1/{SITE}/{device}/media"

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        receipt = json.loads(message.payload)
        with self._lock:
            self.got.setdefault(receipt.get("key") or receipt.get("result_id"), []).append(receipt)

    def send(self, payload: bytes) -> None:
        self.client.publish(self.media, payload, qos=1).wait_for_publish(10)

    def statuses(self, key: str) -> list[str]:
        with self._lock:
            return [r["status"] + (":" + r["reason"] if "reason" in r else "") for r in self.got.get(key, [])]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture()
def rig(tmp_path: Path, local_broker: LocalMosquitto):
    config = ServerConfig.from_dict({"broker": {"port": local_broker.port, "client_id": "server-1"},
                                     "database": "sqlite:///server.sqlite3", "share_group": None,
                                     "max_payload_bytes": 2 * PART_BYTES}, base_dir=tmp_path)
    server = ResultServer(config)
    server.start()
    wait_for(server.is_ready, 10, "the server's subscriptions")
    raw = Receipts(local_broker.port)
    yield server, raw, local_broker
    raw.close()
    server.stop()


def _publisher(tmp_path: Path, port: int, media: MediaSettings = MediaSettings()) -> MqttPublisher:
    return MqttPublisher(MqttSettings(port=port), site=SITE, device_id=DEVICE, delivery=DeliverySettings(media=media),
                         outbox=Outbox(tmp_path / "outbox.sqlite3", max_payload_bytes=PART_BYTES))


def _linked(server: ResultServer, result_id: str) -> str | None:
    image = images_for(server.store, result_id).get("field")
    return image.sha256 if image else None


def _reasons(server: ResultServer) -> list[str]:
    return [r[0] for r in server.store.query("SELECT reason FROM rejections ORDER BY id")]


def test_a_field_image_in_many_parts_arrives_byte_identical(tmp_path: Path, rig) -> None:
    server, _, broker = rig
    frame = real_frame()
    expected = encode_jpeg(frame, 70)
    publisher = _publisher(tmp_path, broker.port, MediaSettings(jpeg_quality=70))
    try:
        result = make_result(DEVICE, 0)
        publisher.publish_with_field_image(result, frame)
        parts = publisher.outbox.depth() - 1
        assert parts >= 4, "the image should need several parts at this message size"
        assert publisher.wait_drained(30), publisher.stats
        sha = hashlib.sha256(expected).hexdigest()
        assert _linked(server, result["result_id"]) == sha
        assert ImageStore(server.config.images_path()).get(sha) == expected
        assert server.store.query("SELECT COUNT(*) FROM media_parts")[0][0] == 0  # joined parts are not kept
        assert publisher.outbox.outcome(part_key(result["result_id"], "field", parts - 1)) == "stored"
        # The knob off: the same call queues the result alone.
        off = _publisher(tmp_path / "off", broker.port, MediaSettings(field_images=False))
        off.publish_with_field_image(make_result(DEVICE, 1), frame)
        assert off.outbox.depth() == 1 and {r.kind for r in off.outbox.pending(10)} == {"results"}
        off.close()
    finally:
        publisher.close()


def test_result_first_then_its_image_in_shuffled_duplicated_parts(tmp_path: Path, rig) -> None:
    server, raw, broker = rig
    from fastapi.testclient import TestClient

    from server.web.app import create_app
    from server.web.auth import Accounts
    from server.web.db import Database

    publisher = _publisher(tmp_path, broker.port)
    result = make_result(DEVICE, 0)
    publisher.publish(result)
    assert publisher.wait_drained(20)
    publisher.close()
    rid = result["result_id"]

    web_config = ServerConfig.from_dict({"database": server.config.database_url(),
                                         "web": {"images_dir": str(server.config.images_path())}})
    db = Database(server.store.__class__(server.config.database_url()))
    Accounts(db).add("viewer", "correct horse battery", "viewer")
    client = TestClient(create_app(web_config, db))
    login = client.get("/login").text
    csrf = login.split('name="csrf" value="')[1].split('"')[0]
    client.post("/login", data={"username": "viewer", "password": "correct horse battery", "csrf": csrf, "next": "/"})
    assert "Field image pending" in client.get(f"/results/{rid}").text
    assert client.get(f"/results/{rid}/images/field").status_code == 404

    data = encode_jpeg(real_frame(), 60)
    parts = [p.encode() for p in split_image(rid, "field", data, "image/jpeg", PART_BYTES)]
    order = list(range(len(parts)))
    random.Random(7).shuffle(order)
    order = order[:2] + [order[0]] + order[2:-1] + [order[1]] + order[-1:]  # duplicates while incomplete
    last = order[-1]
    for i in order[:-1]:
        raw.send(parts[i])
    wait_for(lambda: all(raw.statuses(part_key(rid, "field", i)) for i in order[:-1]), 10, "receipts")
    assert _linked(server, rid) is None, "an incomplete image must not be linked"
    raw.send(parts[last])
    raw.send(parts[order[0]])  # a duplicate after completion
    wait_for(lambda: len(raw.statuses(part_key(rid, "field", order[0]))) == 3, 10, "the late duplicate's receipt")
    assert raw.statuses(part_key(rid, "field", order[0])) == ["stored", "duplicate", "duplicate"]
    assert raw.statuses(part_key(rid, "field", last)) == ["stored"]
    assert _linked(server, rid) == hashlib.sha256(data).hexdigest()

    page = client.get(f"/results/{rid}").text
    assert "Field image pending" not in page and f"/results/{rid}/images/field" in page
    shown = client.get(f"/results/{rid}/images/field")
    assert shown.status_code == 200 and shown.content == data and shown.headers["content-type"] == "image/jpeg"
    db.close()


def test_bad_media_is_refused_with_a_reason_and_never_shown(tmp_path: Path, rig) -> None:
    server, raw, broker = rig
    data = encode_jpeg(real_frame(), 60)

    def parts_for(rid: str, payload: bytes = data, **change: Any) -> list[MediaPart]:
        out = split_image(rid, "field", payload, "image/jpeg", PART_BYTES)
        return [MediaPart(MediaHeader(**{**p.header.__dict__, **change}), p.data) for p in out]

    # 1. A hash that does not match the joined bytes: the completing part is refused, nothing linked.
    bad_hash = make_result(DEVICE, 1)["result_id"]
    for p in parts_for(bad_hash, sha256="ab" * 32):
        raw.send(p.encode())
    # 2. A part resent with other bytes in its place.
    conflict = make_result(DEVICE, 2)["result_id"]
    first = parts_for(conflict)[0]
    raw.send(first.encode())
    raw.send(MediaPart(first.header, b"\x00" + first.data[1:]).encode())
    # 3. A set that never completes (its last part is missing).
    incomplete = make_result(DEVICE, 3)["result_id"]
    for p in parts_for(incomplete)[:-1]:
        raw.send(p.encode())
    # 4. Not media/1 at all, and a message over the server's limit.
    raw.send(b"garbage without a header")
    raw.send(parts_for(make_result(DEVICE, 4)["result_id"])[0].header.to_json() + b"\n" + b"x" * 3 * PART_BYTES)

    n = len(parts_for(bad_hash))
    wait_for(lambda: raw.statuses(part_key(bad_hash, "field", n - 1)) and
             len(raw.statuses(part_key(conflict, "field", 0))) == 2 and
             len(raw.statuses(part_key(incomplete, "field", n - 2))) == 1 and
             sum(r.startswith("media:") for r in _reasons(server)) >= 4, 15, "every part's receipt")
    assert raw.statuses(part_key(bad_hash, "field", n - 1)) == ["rejected:hash_mismatch"]
    assert raw.statuses(part_key(conflict, "field", 0)) == ["stored", "rejected:conflict"]
    assert set(_reasons(server)) == {"media:hash_mismatch", "media:conflict", "media:bad_header", "media:too_large"}
    for rid in (bad_hash, conflict, incomplete):
        assert _linked(server, rid) is None
    assert server.store.query("SELECT COUNT(*) FROM media_parts WHERE result_id = ?", (bad_hash,))[0][0] == 0

    # 5. Another device's result: its image cannot be attached by this device.
    other = make_result("dev-b", 0)
    publisher = MqttPublisher(MqttSettings(port=broker.port), site=SITE, device_id="dev-b",
                              outbox=Outbox(tmp_path / "b.sqlite3", max_payload_bytes=PART_BYTES))
    publisher.publish(other)
    assert publisher.wait_drained(20)
    publisher.close()
    raw.send(parts_for(other["result_id"])[0].encode())
    wait_for(lambda: raw.statuses(part_key(other["result_id"], "field", 0)), 10, "the mismatch receipt")
    assert raw.statuses(part_key(other["result_id"], "field", 0)) == ["rejected:device_mismatch"]

    # The server is alive and a good image still goes through.
    good = make_result(DEVICE, 5)["result_id"]
    for p in parts_for(good):
        raw.send(p.encode())
    wait_for(lambda: _linked(server, good) is not None, 10, "the good image")
    assert ImageStore(server.config.images_path()).get(_linked(server, good)) == data


def test_an_image_before_its_result_is_kept_and_found_when_the_result_comes(tmp_path: Path, rig) -> None:
    server, raw, broker = rig
    result = make_result(DEVICE, 0)
    data = encode_jpeg(real_frame(), 50)
    for p in split_image(result["result_id"], "field", data, "image/jpeg", PART_BYTES):
        raw.send(p.encode())
    wait_for(lambda: _linked(server, result["result_id"]) is not None, 10, "the image")
    assert server.store.query("SELECT COUNT(*) FROM results")[0][0] == 0
    publisher = _publisher(tmp_path, broker.port)
    publisher.publish(result)
    assert publisher.wait_drained(20)
    publisher.close()
    assert server.store.query("SELECT COUNT(*) FROM results")[0][0] == 1
    assert _linked(server, result["result_id"]) == hashlib.sha256(data).hexdigest()


def test_device_config_knobs_for_field_images() -> None:
    from runtime.contracts.config import config_from_dict
    from runtime.contracts.errors import ConfigError

    base = {"device_id": "scope-1", "publisher": {"type": "mqtt", "host": "broker"}}
    publisher = config_from_dict(base).publisher
    assert publisher.field_images is True and publisher.jpeg_quality == 85
    off = config_from_dict({**base, "publisher": {**base["publisher"], "field_images": False, "jpeg_quality": 60}})
    assert off.publisher.field_images is False and off.publisher.jpeg_quality == 60
    for bad in (0, 101):
        with pytest.raises(ConfigError, match="jpeg_quality"):
            config_from_dict({**base, "publisher": {**base["publisher"], "jpeg_quality": bad}})


def test_a_frame_that_cannot_be_sent_never_costs_its_result(tmp_path: Path, local_broker: LocalMosquitto) -> None:
    publisher = _publisher(tmp_path, local_broker.port)
    try:
        result = make_result(DEVICE, 0)
        publisher.publish_with_field_image(result, np.zeros((0, 0, 3), np.uint8))  # nothing to encode
        assert [(r.result_id, r.kind) for r in publisher.outbox.pending(10)] == [(result["result_id"], "results")]
    finally:
        publisher.close()
