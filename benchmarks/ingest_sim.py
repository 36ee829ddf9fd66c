"""Simulated devices for the ingest benchmark and the intake tests: raw MQTT publishers of result
bytes (valid or poison) that time each result from publish to the server's receipt.

A real device validates before it queues, so it can never send poison; these clients send
whatever bytes they are given, as a broken or hostile device would, and keep no outbox (the
server's guarantees are what is measured). Poison kinds cover each way a message may fail
after the schema used to let it through: numbers beyond the database's integers or beyond a
double, a created_at that is not RFC 3339, NaN, text a database cannot hold, implausible lab
values, and (`refused_by_db`) content the database itself refuses, for which tests add a
constraint on `results.sample_id`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from runtime.delivery.connection import ClientCallbacks, MqttSettings, ResilientClient
from runtime.delivery.topics import topic

_TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from mqtt_helpers import make_result  # noqa: E402  (the test suite's one builder of valid results)

#: sample_id prefix that a test database's constraint refuses (the `refused_by_db` poison).
REFUSED_PREFIX = "POISON-"


def encode(result: dict[str, Any]) -> bytes:
    return json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _replace(result: dict[str, Any], old: str, new: str) -> bytes:
    payload = encode(result)
    assert old.encode() in payload, old
    return payload.replace(old.encode(), new.encode(), 1)


def _seq_beyond_bigint(r: dict[str, Any]) -> bytes:
    return _replace(r, f'"seq":{r["seq"]}', '"seq":99999999999999999999')


def _created_yesterday(r: dict[str, Any]) -> bytes:
    return encode({**r, "created_at": "yesterday"})


def _nan(r: dict[str, Any]) -> bytes:
    return _replace(r, '"total":1.0', '"total":NaN')


def _overflow_to_infinity(r: dict[str, Any]) -> bytes:
    return _replace(r, '"total":1.0', '"total":1e400')


def _nul_in_text(r: dict[str, Any]) -> bytes:
    return _replace(r, f'"sample_id":"{r["sample"]["sample_id"]}"', '"sample_id":"S-\\u0000"')


def _lone_surrogate(r: dict[str, Any]) -> bytes:
    return _replace(r, f'"sample_id":"{r["sample"]["sample_id"]}"', '"sample_id":"S-\\ud800"')


def _implausible_glucose(r: dict[str, Any]) -> bytes:
    return encode({**r, "sample": {**r["sample"], "labs": {"fpg_mmol_l": -50}}})


def _refused_by_db(r: dict[str, Any]) -> bytes:
    return encode({**r, "sample": {**r["sample"], "sample_id": REFUSED_PREFIX + r["sample"]["sample_id"]}})


#: kind -> (payload maker, the rejection reason the server must give).
POISON: dict[str, tuple[Callable[[dict[str, Any]], bytes], str]] = {
    "seq_beyond_bigint": (_seq_beyond_bigint, "schema"),
    "created_at_yesterday": (_created_yesterday, "schema"),
    "nan": (_nan, "not_json"),
    "overflow_to_infinity": (_overflow_to_infinity, "not_json"),
    "nul_in_text": (_nul_in_text, "not_json"),
    "lone_surrogate": (_lone_surrogate, "not_json"),
    "implausible_glucose": (_implausible_glucose, "implausible"),
    "refused_by_db": (_refused_by_db, "unstorable"),
}


@dataclass(frozen=True)
class Message:
    """One prepared publish: its bytes, its id, and the receipt status it must get."""

    result_id: str
    seq: int
    payload: bytes
    expect: str  # "stored" or "rejected:<reason>"
    kind: str = "valid"


def valid_message(device: str, seq: int) -> Message:
    result = make_result(device, seq)
    return Message(result["result_id"], seq, encode(result), "stored")


def poison_message(device: str, seq: int, kind: str) -> Message:
    result = make_result(device, seq)
    make, reason = POISON[kind]
    return Message(result["result_id"], seq, make(result), f"rejected:{reason}", kind)


def create_refusal_constraint(store: Any) -> None:
    """Make a real database refuse `refused_by_db` results (a trigger in SQLite, a CHECK in PostgreSQL)."""
    with store._transaction() as cur:
        if store.kind == "sqlite":
            cur.execute("CREATE TRIGGER IF NOT EXISTS refuse_poison BEFORE INSERT ON results "
                        f"WHEN NEW.sample_id LIKE '{REFUSED_PREFIX}%' BEGIN SELECT RAISE(ABORT, 'refused'); END")
        else:
            cur.execute("ALTER TABLE results DROP CONSTRAINT IF EXISTS refuse_poison")
            cur.execute(f"ALTER TABLE results ADD CONSTRAINT refuse_poison CHECK (sample_id NOT LIKE '{REFUSED_PREFIX}%')")


@dataclass
class Timeline:
    """Publish and receipt times (time.monotonic) per result id."""

    published: dict[str, float] = field(default_factory=dict)
    receipts: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    def latencies_ms(self, ids: list[str]) -> list[float]:
        return [(self.receipts[r][0][1] - self.published[r]) * 1000 for r in ids if r in self.receipts]


class SimDevice:
    """One device's MQTT client: publishes prepared bytes, collects receipts, keeps a send window."""

    def __init__(self, settings: MqttSettings, site: str, device: str, window: int = 50) -> None:
        self.device, self.window = device, window
        self.results_topic = topic(site, device, "results")
        self.receipts_topic = topic(site, device, "receipts")
        self.timeline = Timeline()
        self._lock = threading.Condition()
        self._unreceipted: set[str] = set()
        self._sub: tuple[mqtt.Client, int] | None = None
        self._ready: mqtt.Client | None = None
        self.connection = ResilientClient(settings, ClientCallbacks(on_connected=self._connected,
                                                                    on_subscribed=self._subscribed,
                                                                    on_message=self._message))
        self.connection.start()

    def is_ready(self) -> bool:
        return self._ready is not None and self._ready is self.connection.client and self._ready.is_connected()

    def publish(self, message: Message, timeout_s: float = 60.0) -> None:
        """Publish at QoS 1 once fewer than `window` results await their receipt."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self._unreceipted) >= self.window:
                if not self._lock.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"{self.device}: window of {self.window} still full after {timeout_s:g} s")
            self._unreceipted.add(message.result_id)
            self.timeline.published[message.result_id] = time.monotonic()
        self.connection.client.publish(self.results_topic, message.payload, qos=1, retain=False)

    def resend(self, message: Message) -> None:
        """Send the same bytes again (what a device does when no receipt came in time)."""
        self.connection.client.publish(self.results_topic, message.payload, qos=1, retain=False)

    def unreceipted(self) -> int:
        with self._lock:
            return len(self._unreceipted)

    def close(self) -> None:
        self.connection.stop()

    def _connected(self, client: mqtt.Client, session_present: bool) -> None:
        _, mid = client.subscribe(self.receipts_topic, qos=1)
        self._sub = (client, mid)

    def _subscribed(self, client: mqtt.Client, mid: int, reason_codes: list[Any]) -> None:
        if self._sub == (client, mid):
            self._ready = client

    def _message(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        receipt = json.loads(message.payload)
        status = receipt["status"] + (f":{receipt['reason']}" if receipt.get("reason") else "")
        rid = receipt.get("result_id")
        with self._lock:
            self.timeline.receipts.setdefault(rid, []).append((status, now))
            self._unreceipted.discard(rid)
            self._lock.notify_all()
