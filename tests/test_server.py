"""The server's validation, idempotent store (SQLite and a real PostgreSQL), config and shared load."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mqtt_helpers import SITE, broker, certs, make_result, postgres_url, tls_settings, wait_for, write_server_config  # noqa: F401

from runtime.contracts.errors import ConfigError
from runtime.delivery.outbox import encode_result
from server.config import ServerConfig
from server.service import ResultServer
from server.store import Store
from server.validation import Accepted, check_message

TOPIC = f"smearscope/v1/{SITE}/dev-a/results"
LIMIT = 64 * 1024


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path: Path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'server.db'}")
    else:
        s = Store(request.getfixturevalue("postgres_url"))
        with s._transaction() as cur:  # a clean slate per test in the shared cluster
            cur.execute("TRUNCATE results, rejections, deliveries")
    yield s
    s.close()


def _server(store: Store, tmp_path: Path) -> ResultServer:
    config = ServerConfig.from_dict({"max_payload_bytes": LIMIT, "database": f"sqlite:///{tmp_path}/unused.db"})
    return ResultServer(config, store=store)


def test_valid_result_is_stored_once_and_resends_are_duplicates(store: Store, tmp_path: Path) -> None:
    server = _server(store, tmp_path)
    payload = encode_result(make_result("dev-a", 1))
    assert server.handle(TOPIC, payload).status == "stored"
    assert server.handle(TOPIC, payload).status == "duplicate"
    reordered = json.dumps(json.loads(payload), indent=2).encode()  # same content, other bytes
    assert server.handle(TOPIC, reordered).status == "duplicate"
    assert store.counts()["results"] == 1
    assert store.counts()["delivery:duplicate"] == 2


def test_same_id_with_different_content_is_rejected_and_recorded(store: Store, tmp_path: Path) -> None:
    server = _server(store, tmp_path)
    result = make_result("dev-a", 1)
    server.handle(TOPIC, encode_result(result))
    result["counts"]["rbc"] += 1
    outcome = server.handle(TOPIC, encode_result(result))
    assert (outcome.status, outcome.reason, outcome.result_id) == ("rejected", "conflict", result["result_id"])
    stored = json.loads(store.query("SELECT payload FROM results")[0][0])
    assert stored["counts"]["rbc"] == result["counts"]["rbc"] - 1  # the first version stands
    assert store.query("SELECT reason, result_id FROM rejections") == [("conflict", result["result_id"])]


BAD_MESSAGES = {
    "not_utf8": lambda: encode_result(make_result("dev-a", 1)).replace(b'"S-', b'"\xff\xfe-'),
    "not_json": lambda: b'{"schema": "result/1", ',
    "schema_version": lambda: encode_result({**make_result("dev-a", 1), "schema": "result/99"}),
    "schema": lambda: encode_result({**make_result("dev-a", 1), "counts": {"rbc": -1}}),
    "too_large": lambda: encode_result({**make_result("dev-a", 1), "derived": {"pad": "x" * LIMIT}}),
    "device_mismatch": lambda: encode_result(make_result("dev-b", 1)),
}


@pytest.mark.parametrize("reason", sorted(BAD_MESSAGES))
def test_each_bad_message_is_rejected_and_kept_with_its_reason(store: Store, tmp_path: Path, reason: str) -> None:
    server = _server(store, tmp_path)
    payload = BAD_MESSAGES[reason]()
    outcome = server.handle(TOPIC, payload)
    assert (outcome.status, outcome.reason) == ("rejected", reason)
    rows = store.query("SELECT reason, device_id, payload FROM rejections")
    assert [(r[0], r[1], bytes(r[2])) for r in rows] == [(reason, "dev-a", payload)]
    assert store.counts()["results"] == 0


def test_json_constants_and_duplicate_keys_are_not_json() -> None:
    good = encode_result(make_result("dev-a", 1))
    for bad in (good.replace(b'"total":1.0', b'"total":NaN'), good[:-1] + b',"seq":5}'):
        checked = check_message(TOPIC, bad, LIMIT)
        assert getattr(checked, "reason", None) == "not_json", checked


def test_topics_outside_the_contract_are_rejected() -> None:
    payload = encode_result(make_result("dev-a", 1))
    for topic in ("smearscope/v1/lab1/dev-a/status", "other/v1/lab1/dev-a/results", "smearscope/v1/lab1/dev+a/results"):
        assert getattr(check_message(topic, payload, LIMIT), "reason", None) == "bad_topic"
    assert isinstance(check_message(TOPIC, payload, LIMIT), Accepted)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    cases = {"databse: x": "databse", "broker: {prot: 1}": "broker.prot", "broker: {port: 0}": "broker.port",
             "database: mysql://x": "database", "max_payload_bytes: 10": "max_payload_bytes",
             "broker: {ca_file: a.crt}": "broker.ca_file", "workers: 0": "workers", "workers: '2'": "workers",
             "workers: 2\nshare_group: null": "workers", "max_batch: 0": "max_batch", "max_batch: true": "max_batch"}
    for text, key in cases.items():
        path = tmp_path / "s.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            ServerConfig.load(path)


def test_relative_sqlite_path_is_relative_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "server.yaml"
    path.parent.mkdir()
    path.write_text("database: sqlite:///data/s.db\n")
    assert ServerConfig.load(path).database_url() == f"sqlite:///{tmp_path}/conf/data/s.db"


@pytest.mark.mosquitto
@pytest.mark.parametrize("db_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_shared_subscription_splits_the_load_between_two_servers(tmp_path: Path, certs: Path, broker, db_kind: str,
                                                                 request) -> None:
    from runtime.delivery.publisher import MqttPublisher
    from runtime.delivery.outbox import Outbox

    if db_kind == "sqlite":
        db = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        db = request.getfixturevalue("postgres_url")
        with Store(db)._transaction() as cur:
            cur.execute("TRUNCATE results, rejections, deliveries")
    servers = []
    for i in range(2):
        cfg = write_server_config(tmp_path / f"s{i}.yaml", certs, broker.port, db, share_group="workers",
                                  client_id=f"smearscope-server-{i}")
        servers.append(ResultServer(ServerConfig.load(cfg)))
    for s in servers:
        s.start()
    wait_for(lambda: all(s.connection.is_connected() for s in servers), 10, "both servers")
    time.sleep(0.3)  # subscriptions settle
    pub = MqttPublisher(tls_settings(certs, "dev-a", broker.port), site=SITE, device_id="dev-a",
                        outbox=Outbox(tmp_path / "o.db"))
    try:
        for i in range(60):
            pub.publish(make_result("dev-a", i))
        assert pub.wait_drained(30)
        shares = [s.processed for s in servers]
        assert sum(shares) >= 60 and min(shares) > 0, shares
        assert servers[0].store.counts()["results"] == 60
    finally:
        pub.close()
        for s in servers:
            s.stop()
