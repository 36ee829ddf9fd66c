"""Poison-proof intake through real Mosquitto and real databases: bad messages are rejected with a
receipt and recorded, good ones around them are stored, and a database outage loses nothing."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from mqtt_helpers import (MOSQUITTO, SITE, Postgres, broker, certs, postgres_bin, postgres_url, tls_settings,  # noqa: F401
                          wait_for, write_server_config)

from benchmarks.ingest_sim import POISON, Message, SimDevice, create_refusal_constraint, poison_message, valid_message
from server.config import ServerConfig
from server.service import ResultServer
from server.store import Store
from server.validation import check_message

pytestmark = [pytest.mark.mosquitto, pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")]

DEVICE = "dev-a"


def _fresh_db(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    url = request.getfixturevalue("postgres_url")
    store = Store(url)
    with store._transaction() as cur:
        cur.execute("TRUNCATE results, rejections, deliveries")
    store.close()
    return url


def _start_server(tmp_path: Path, certs: Path, port: int, db: str, name: str = "s") -> ResultServer:
    server = ResultServer(ServerConfig.load(write_server_config(tmp_path / f"{name}.yaml", certs, port, db)))
    server.start()
    wait_for(server.is_ready, 15, "the server's subscription")
    return server


def _device(certs: Path, port: int, window: int = 1000) -> SimDevice:
    device = SimDevice(tls_settings(certs, DEVICE, port), SITE, DEVICE, window=window)
    wait_for(device.is_ready, 15, "the device's receipts subscription")
    return device


def _send_and_time(device: SimDevice, messages: list[Message], timeout_s: float = 60) -> float:
    """Seconds from the first publish until every message has its receipt."""
    start = time.monotonic()
    for m in messages:
        device.publish(m)
    wait_for(lambda: all(m.result_id in device.timeline.receipts for m in messages), timeout_s,
             f"receipts for {len(messages)} messages")
    return time.monotonic() - start


def test_every_poison_kind_passes_no_check_it_should_not() -> None:
    """Each poison kind is refused for the reason the integration test expects (no broker needed)."""
    for kind, (_, reason) in POISON.items():
        m = poison_message(DEVICE, 1, kind)
        verdict = check_message(f"smearscope/v1/{SITE}/{DEVICE}/results", m.payload, 64 * 1024)
        expected = None if reason == "unstorable" else reason  # that one only the database refuses
        assert getattr(verdict, "reason", None) == expected, (kind, verdict)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_thousand_valid_and_five_hundred_poison_interleaved(tmp_path: Path, certs: Path, broker, db_kind: str,
                                                            request: pytest.FixtureRequest) -> None:
    db = _fresh_db(db_kind, tmp_path, request)
    server = _start_server(tmp_path, certs, broker.port, db)
    create_refusal_constraint(server.store)
    device = _device(certs, broker.port)
    try:
        seq = itertools.count()
        before = _send_and_time(device, [valid_message(DEVICE, next(seq)) for _ in range(300)])

        kinds = itertools.cycle(sorted(POISON))
        mixed: list[Message] = []
        for i in range(1500):  # valid, valid, poison, ...
            mixed.append(poison_message(DEVICE, next(seq), next(kinds)) if i % 3 == 2
                         else valid_message(DEVICE, next(seq)))
        _send_and_time(device, mixed)

        after = _send_and_time(device, [valid_message(DEVICE, next(seq)) for _ in range(300)])

        got = {m.result_id: device.timeline.receipts[m.result_id][0][0] for m in mixed}
        assert {m.result_id: m.expect for m in mixed} == got
        counts = server.store.counts()
        assert counts["results"] == 300 + 1000 + 300
        rejected = server.store.query("SELECT result_id, reason FROM rejections")
        assert sorted(rejected) == sorted((m.result_id, m.expect.split(":")[1]) for m in mixed if m.kind != "valid")
        # still storing at its normal rate after the poison: within a factor of 2 (plus scheduling noise)
        assert after <= 2 * before + 1.0, (before, after)
        print(f"\n{db_kind}: 300 valid before the poison in {before:.2f} s, after it in {after:.2f} s")
    finally:
        device.close()
        server.stop()


@pytest.fixture()
def own_postgres():
    if postgres_bin() is None:
        pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
    pg = Postgres()
    pg.start()
    yield pg
    pg.stop()


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_database_outage_leaves_messages_unacknowledged_and_loses_nothing(tmp_path: Path, certs: Path, broker,
                                                                          own_postgres: Postgres) -> None:
    url = own_postgres.url
    server = _start_server(tmp_path, certs, broker.port, url, "s1")
    device = _device(certs, broker.port)
    try:
        first = [valid_message(DEVICE, i) for i in range(100)]
        _send_and_time(device, first)

        # Outage 1, the server keeps running: it retries with back-off and stores everything after recovery.
        own_postgres.halt()
        during = [valid_message(DEVICE, 100 + i) for i in range(100)]
        for m in during:
            device.publish(m)
        time.sleep(2.0)
        assert not any(m.result_id in device.timeline.receipts for m in during)
        assert server.intake.outages > 0
        own_postgres.resume()
        wait_for(lambda: all(m.result_id in device.timeline.receipts for m in during), 30, "receipts after recovery")

        # Outage 2, the server is stopped while the database is down: what it held was never
        # acknowledged, so the broker hands it to the next server once the database is back.
        own_postgres.halt()
        held = [valid_message(DEVICE, 200 + i) for i in range(100)]
        for m in held:
            device.publish(m)
        time.sleep(1.5)
        server.stop()
        own_postgres.resume()
        server = _start_server(tmp_path, certs, broker.port, url, "s1")
        wait_for(lambda: all(m.result_id in device.timeline.receipts for m in held), 30, "receipts after restart")

        every = first + during + held
        assert {device.timeline.receipts[m.result_id][0][0] for m in every} == {"stored"}
        rows = server.store.query("SELECT result_id FROM results")
        assert sorted(r[0] for r in rows) == sorted(m.result_id for m in every)
        assert server.store.counts()["rejections"] == 0
    finally:
        device.close()
        server.stop()


def _mutations() -> dict[str, dict]:
    """Valid results and results each broken in one way the schema must catch."""
    from mqtt_helpers import make_result

    base = make_result(DEVICE, 7, labs={"fpg_mmol_l": 6.1})
    cases: dict[str, dict] = {"valid": base, "valid_offset_time": {**base, "created_at": "2026-01-02T03:04:05.123+05:30"},
                              "valid_leap_second": {**base, "created_at": "2016-12-31T23:59:60Z"},
                              "valid_max_seq": {**base, "seq": 2**53 - 1}}

    def with_(path: str, value) -> dict:
        out = json.loads(json.dumps(base))
        *parents, last = path.split(".")
        node = out
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
        return out

    for name, (path, value) in {
        "seq_2^53": ("seq", 2**53), "seq_bigint+1": ("seq", 2**63), "seq_negative": ("seq", -1), "seq_float": ("seq", 1.5),
        "seq_bool": ("seq", True), "created_words": ("created_at", "yesterday"),
        "created_no_offset": ("created_at", "2026-01-02T03:04:05"), "created_space": ("created_at", "2026-01-02 03:04:05Z"),
        "created_feb30": ("created_at", "2026-02-30T00:00:00Z"), "created_hour24": ("created_at", "2026-01-02T24:00:00Z"),
        "created_newline": ("created_at", "2026-01-02T03:04:05Z\n"), "created_number": ("created_at", 1700000000),
        "created_long_fraction": ("created_at", "2026-01-02T03:04:05.1234567890Z"),
        "result_id_v4": ("result_id", "0190a0b0-0000-4000-8000-000000000000"), "device_bad": ("device_id", "a/b"),
        "counts_negative": ("counts.rbc", -1), "counts_huge": ("counts.wbc", 10**7 + 1), "counts_missing": ("counts.platelet", _DELETE),
        "area_over_100": ("area_pct.rbc", 100.5), "extra_top": ("extra", 1), "extra_sample": ("sample.extra", 1),
        "field_index_huge": ("sample.field_index", 10**6 + 1), "sample_id_long": ("sample.sample_id", "x" * 129),
        "labs_value_long": ("sample.labs.note", "x" * 257), "labs_key_long": ("sample.labs." + "k" * 129, 1.0),
        "labs_object": ("sample.labs.fpg_mmol_l", {"v": 1}), "timing_negative": ("timings_ms.total", -1),
        "timing_huge": ("timings_ms.total", 1e9), "sha_bad": ("model.sha256", "z" * 64),
        "diagnosis_status": ("diagnosis", {"guideline": "who", "status": "fine"}), "schema_other": ("schema", "result/2"),
    }.items():
        cases[name] = with_(path, value)
    return cases


_DELETE = object()


def test_compiled_schema_check_agrees_with_jsonschema() -> None:
    """The compiled check may only skip jsonschema when jsonschema would accept too: the same
    verdict on every kind of bad result/1 message (result/2: tests/test_cells.py)."""
    from runtime.contracts.schema import _validator, compiled_accepts

    if compiled_accepts({}, "result-1") is None:
        pytest.skip("jsonschema-rs not installed")

    def python_accepts(message: dict, name: str) -> bool:
        return not any(True for _ in _validator(name).iter_errors(message))

    for name, message in _mutations().items():
        fast_ok = compiled_accepts(message, "result-1")
        assert fast_ok == python_accepts(message, "result-1"), name
        assert fast_ok == name.startswith("valid"), name


@pytest.mark.timeout(120)
def test_serve_with_workers_shares_the_load_and_restarts_a_dead_worker(tmp_path: Path, certs: Path, broker) -> None:
    """`workers: 2`: two processes in one share group; a SIGKILLed worker comes back and nothing is lost."""
    import os
    import signal
    import subprocess

    from mqtt_helpers import start_server_process

    db = tmp_path / "server.db"
    config = write_server_config(tmp_path / "s.yaml", certs, broker.port, f"sqlite:///{db}")
    config.write_text(json.dumps({**json.loads(config.read_text()), "workers": 2}))
    serve = start_server_process(config, tmp_path / "serve.log")
    device = None
    try:
        wait_for(lambda: all(f"as smearscope-server-{i}" in broker.log() for i in range(2)), 30, "two workers")
        device = _device(certs, broker.port)
        time.sleep(1.0)  # the workers' SUBSCRIBEs follow their connections
        _send_and_time(device, [valid_message(DEVICE, i) for i in range(40)])
        children = subprocess.run(["pgrep", "-P", str(serve.pid)], capture_output=True, text=True).stdout.split()
        workers = [int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) >= 2, workers
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: broker.log().count("as smearscope-server-") >= 3, 30, "the dead worker's restart")
        _send_and_time(device, [valid_message(DEVICE, 40 + i) for i in range(40)])
        store = Store(f"sqlite:///{db}")
        assert store.counts()["results"] == 80
        store.close()
    finally:
        if device is not None:
            device.close()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
