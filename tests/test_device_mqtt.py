"""The device with the MQTT publisher from its config: an order from the server switches the sample,
the result reaches the server's database, and the sequence continues after a restart.
Real broker (a private Mosquitto), real server, real SQLite, real ONNX Runtime."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time

import pytest

from _device_model import trained_model_path
from runtime.device.assembly import build_device
from runtime.contracts.config import config_from_dict
from runtime.capture.triggers import ManualTrigger


@pytest.fixture(scope="session")
def model_path():
    return trained_model_path()


@pytest.fixture()
def delivery(tmp_path, local_broker):
    from server.config import ServerConfig
    from server.service import ResultServer

    broker = local_broker
    config = ServerConfig.from_dict({"broker": {"port": broker.port, "client_id": "test-server"},
                                     "database": f"sqlite:///{tmp_path / 'server.sqlite3'}", "share_group": None},
                                    base_dir=tmp_path)
    server = ResultServer(config)
    server.start()
    yield broker, config, tmp_path / "server.sqlite3"
    server.stop()


def _wait(condition, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_order_result_and_sequence_over_mqtt(model_path, delivery, tmp_path):
    from server.orders import send_order_once

    broker, server_config, database = delivery
    config = config_from_dict({
        "device_id": "scope-mq",
        "model": {"path": str(model_path), "providers": ["cpu"], "threads": 2},
        "camera": {"type": "synthetic", "width": 256, "height": 192},
        "publisher": {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "site": "lab",
                      "outbox": str(tmp_path / "outbox.sqlite3")},
        "diagnosis": {"guideline": "ada"},
    })
    trigger = ManualTrigger()
    setup = build_device(config, trigger=trigger)
    device, publisher = setup.device, setup.device.publisher
    setup.start()
    loop = threading.Thread(target=device.run, daemon=True)
    loop.start()
    try:
        _wait(publisher.connection.is_connected, what="the device's MQTT connection")
        send_order_once(server_config, "lab", "scope-mq",
                        {"sample_id": "S-ORD", "patient_id": "p-ord", "labs": {"fpg_mmol_l": 7.6}}, fields=2)
        _wait(lambda: device.samples.current is not None and device.samples.current.sample_id == "S-ORD",
              what="the order to reach the device")
        outcomes = []
        device.on_outcome = outcomes.append
        trigger.press()
        _wait(lambda: outcomes, what="the capture")
        assert publisher.wait_drained(20.0)
    finally:
        device.events.quit("test")
        loop.join(timeout=20)
        setup.stop()
    result = outcomes[0].result
    assert outcomes[0].status == "ok"
    assert result["sample"]["sample_id"] == "S-ORD" and result["sample"]["labs"] == {"fpg_mmol_l": 7.6}
    assert result["diagnosis"]["status"] == "diabetes"
    with sqlite3.connect(database) as db:
        assert [row[0] for row in db.execute("SELECT result_id FROM results")] == [result["result_id"]]
        links = db.execute("SELECT result_id, kind, sha256, content_type FROM result_images").fetchall()
    # The analysed frame reached the server too (MQTT publisher default: field images on), as the JPEG
    # the device encoded from the very frame it analysed.
    from runtime.delivery.media import encode_jpeg
    from server.images import ImageStore

    expected = encode_jpeg(outcomes[0].frame.image, 85)
    assert links == [(result["result_id"], "field", hashlib.sha256(expected).hexdigest(), "image/jpeg")]
    assert ImageStore(server_config.images_path()).get(links[0][2]) == expected

    restarted = build_device(config, trigger=ManualTrigger())
    try:
        assert restarted.device.seq == result["seq"] + 1
    finally:
        restarted.stop()
