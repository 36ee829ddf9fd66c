"""The device's MQTT side against a real Mosquitto: topics, status and last will, PUBACK reason
codes, the size limit, contained callbacks, the watchdog, and orders."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from mqtt_helpers import (SITE, broker, certs, make_result, start_device_process, tls_settings,  # noqa: F401
                          wait_for, write_server_config)
from test_security import device

from runtime.contracts.errors import SchemaError
from runtime.delivery.orders import parse_order
from runtime.delivery.publisher import MqttPublisher
from runtime.delivery.topics import TopicError, parse, results_filter, topic
from runtime.delivery.outbox import Outbox, PayloadTooLarge
from server.config import ServerConfig
from server.service import ResultServer


def test_topic_contract() -> None:
    assert topic("lab1", "dev-a", "results") == "smearscope/v1/lab1/dev-a/results"
    assert parse("smearscope/v1/lab1/dev-a/orders").device == "dev-a"
    assert results_filter() == "smearscope/v1/+/+/results"
    assert results_filter(share_group="g") == "$share/g/smearscope/v1/+/+/results"
    for bad in (("lab+1", "d", "results"), ("lab1", "d/x", "results"), ("lab1", "#", "results"), ("l", "d", "logs")):
        with pytest.raises(TopicError):
            topic(*bad)


@pytest.fixture()
def server(tmp_path: Path, certs: Path, broker):
    cfg = write_server_config(tmp_path / "server.yaml", certs, broker.port, f"sqlite:///{tmp_path / 's.db'}")
    srv = ResultServer(ServerConfig.load(cfg))
    srv.start()
    wait_for(srv.connection.is_connected, 10, "server connection")
    yield srv
    srv.stop()


def _publisher(tmp_path: Path, certs: Path, port: int, cert_name: str = "dev-a", device_id: str = "dev-a",
               **kw) -> MqttPublisher:
    settings = tls_settings(certs, cert_name, port, client_id=f"pub-{device_id}")
    pub = MqttPublisher(settings, site=SITE, device_id=device_id, outbox=Outbox(tmp_path / f"{device_id}.db"), **kw)
    wait_for(pub.connection.is_connected, 10, "publisher connection")
    return pub


@pytest.mark.mosquitto
def test_status_is_retained_online_and_the_last_will_says_offline(tmp_path: Path, certs: Path, broker) -> None:
    status = f"smearscope/v1/{SITE}/dev-b/status"
    proc = start_device_process(certs, broker.port, "dev-b", tmp_path / "o.db", 10**9, tmp_path / "ev.log",
                                tmp_path / "dev.log", interval_s=0.5)
    wait_for(lambda: (tmp_path / "ev.log").exists() and " connect " in (tmp_path / "ev.log").read_text(), 20,
             "device connect")
    watcher = device(certs, broker.port, "dev-b")  # a late subscriber sees the retained value
    watcher.c.subscribe(status, qos=1)
    wait_for(lambda: watcher.messages, 10, "retained status")
    assert (watcher.messages[-1].payload, watcher.messages[-1].retain) == (b"online", True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: watcher.messages[-1].payload == b"offline", 15, "the last will")
    watcher.close()


@pytest.mark.mosquitto
def test_refused_publish_is_held_with_the_puback_reason(tmp_path: Path, certs: Path, broker) -> None:
    # A device whose certificate (dev-b) does not match its configured id (dev-a): the ACL refuses.
    pub = _publisher(tmp_path, certs, broker.port, cert_name="dev-b", device_id="dev-a")
    try:
        pub.publish(make_result("dev-a", 0))
        wait_for(lambda: pub.outbox.held(), 10, "the refused row to be held")
        assert "not authorised (0x87)" in pub.outbox.held()[0][1]
        assert pub.outbox.depth() == 1 and pub.stats.puback_failures == 1
    finally:
        pub.close()


@pytest.mark.mosquitto
def test_oversize_result_is_refused_before_it_is_queued(tmp_path: Path, certs: Path, broker) -> None:
    pub = _publisher(tmp_path, certs, broker.port)
    pub.outbox.max_payload_bytes = 4096
    try:
        big = make_result("dev-a", 0)
        big["derived"] = {"pad": "x" * 5000}
        with pytest.raises(PayloadTooLarge):
            pub.publish(big)
        bad = make_result("dev-a", 1)
        bad["schema"] = "result/0"
        with pytest.raises(SchemaError):
            pub.publish(bad)
        assert pub.outbox.depth() == 0 and pub.stats.sent == 0
    finally:
        pub.close()


@pytest.mark.mosquitto
def test_callback_exceptions_are_contained_and_orders_reach_the_device(tmp_path: Path, certs: Path, broker,
                                                                       server) -> None:
    orders: list[dict] = []
    calls: list[str] = []

    def flaky(order: dict) -> None:
        calls.append(order["order_id"])
        if len(calls) == 1:
            raise RuntimeError("a bug in the device's order handler")
        orders.append(order)

    pub = _publisher(tmp_path, certs, broker.port, on_order=flaky)
    try:
        time.sleep(0.3)
        server.send_order(SITE, "dev-a", {"sample_id": "S1", "patient_id": "p1"})
        wait_for(lambda: pub.connection.stats.callback_errors == 1, 10, "the failing callback")
        assert pub.connection.network_thread_alive()
        server.send_order(SITE, "dev-a", {"sample_id": "S2", "patient_id": "p2", "labs": {"fpg_mmol_l": 6.2}}, fields=2)
        wait_for(lambda: orders, 10, "the second order")
        assert orders[0]["sample"] == {"sample_id": "S2", "patient_id": "p2", "labs": {"fpg_mmol_l": 6.2}}
        assert orders[0]["fields"] == 2 and orders[0]["schema"] == "order/1"
        # and the connection still delivers results
        pub.publish(make_result("dev-a", 0))
        assert pub.wait_drained(10)
    finally:
        pub.close()


def test_orders_are_validated() -> None:
    assert parse_order(b'{"schema": "order/1", "order_id": "x", "sample": {"sample_id": "A"}}')["order_id"] == "x"
    for bad in (b'{"schema": "order/1", "order_id": "x"}', b"\xff", b'{"schema": "order/2", "order_id": "x",'
                b' "sample": {"sample_id": "A"}}'):
        with pytest.raises(SchemaError):
            parse_order(bad)


@pytest.mark.mosquitto
def test_watchdog_recreates_a_client_whose_network_thread_died(tmp_path: Path, certs: Path, broker, server) -> None:
    pub = _publisher(tmp_path, certs, broker.port)
    try:
        old = pub.connection.client
        old.loop_stop()  # the network thread is gone, as after an escaped exception
        assert not pub.connection.network_thread_alive()
        wait_for(lambda: pub.connection.client is not old and pub.connection.is_connected(), 15, "a new client")
        assert pub.connection.stats.recreated == 1
        pub.publish(make_result("dev-a", 0))
        assert pub.wait_drained(15)
    finally:
        pub.close()




@pytest.mark.mosquitto
def test_patients_order_cli_reaches_the_device(tmp_path: Path, certs: Path, broker, cli_runner) -> None:
    from smearscope.cli import cli

    from runtime.device.assembly import order_to_event

    events = []
    pub = _publisher(tmp_path, certs, broker.port, on_order=lambda order: events.append(order_to_event(order)))
    cfg = write_server_config(tmp_path / "server.yaml", certs, broker.port, f"sqlite:///{tmp_path / 's.db'}")
    try:
        time.sleep(0.3)
        out = cli_runner.invoke(cli, ["patients", "order", "--config", str(cfg), "--site", SITE, "--device", "dev-a",
                                      "--sample-id", "S9", "--patient-id", "p-1", "--lab", "fpg_mmol_l=6.4",
                                      "--lab", "hba1c_pct=6.1", "--fields", "2"])
        assert out.exit_code == 0, out.output
        wait_for(lambda: events, 10, "the order at the device")
        assert events[0].payload == {"sample_id": "S9", "patient_id": "p-1", "fields": 2,
                                     "labs": {"fpg_mmol_l": 6.4, "hba1c_pct": 6.1}}
    finally:
        pub.close()
