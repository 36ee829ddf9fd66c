"""The subscriber behind `smearscope serve`: validate, store, commit, then ack, then receipt.

Messages arrive with manual acknowledgement (paho `manual_ack=True`): the broker considers a
message delivered only after the store has committed it, so a server killed between commit and ack
gets the message again (from the broker, or as the device's resend) and the store answers
`duplicate`. paho's network thread only queues each message; one store thread takes everything
queued (up to `max_batch`), commits it in one transaction (server.intake: poison messages are
rejected, a database outage is waited out unacknowledged), then acks and receipts each message in
arrival order. Several server processes (`workers`, or separate hosts) share the load through an
MQTT 5 shared subscription (`$share/<group>/smearscope/v1/+/+/results`). Field images arrive on
the sibling media topic (same group) and take the same path: commit, then ack, then a receipt per
part (server.media).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from runtime.delivery.connection import ClientCallbacks, ResilientClient
from runtime.delivery.topics import results_filter, topic
from server.config import ServerConfig
from server.media import MediaIntake
from server.orders import build_order, publish_order
from server.intake import Intake
from server.store import Outcome, Store

log = logging.getLogger(__name__)

#: Fault injection for the delivery tests: SIGKILL this process right after the Nth commit, before its ack.
CRASH_AFTER_COMMITS_ENV = "SMEARSCOPE_SERVER_CRASH_AFTER_COMMITS"
GIL_SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True)
class _Arrival:
    """A message waiting for the store thread, with the connection it came on (acks go back on it)."""

    client: mqtt.Client
    connection: int  # ResilientClient connect count when it arrived: an ack is only valid on that connection
    topic: str
    payload: bytes
    mid: int
    qos: int


class ResultServer:
    """One server process: a resilient MQTT connection and a store."""

    def __init__(self, config: ServerConfig, store: Store | None = None) -> None:
        self.config = config
        self.store = store or Store(config.database_url())
        self.processed = 0
        self._commits = 0
        crash = os.environ.get(CRASH_AFTER_COMMITS_ENV)
        self._crash_after = int(crash) if crash else None
        self._stopping = threading.Event()
        media = MediaIntake(self.store, config.images_path(), config.max_payload_bytes)
        self.intake = Intake(self.store, config.max_payload_bytes, self._stopping, media=media)
        self._arrivals: queue.Queue[_Arrival] = queue.Queue()
        self._store_thread = threading.Thread(target=self._store_loop, name="result-store", daemon=True)
        self.subscription = results_filter(config.site, config.share_group)
        self.media_subscription = results_filter(config.site, config.share_group, kind="media")
        self._subscribing: tuple[mqtt.Client, int] | None = None  # (client, SUBSCRIBE mid) awaiting SUBACK
        self._subscribed: mqtt.Client | None = None
        self.connection = ResilientClient(
            config.broker.settings(config.base_dir),
            ClientCallbacks(on_connected=self._connected, on_message=self._message, on_subscribed=self._suback,
                            on_disconnected=self._disconnected),
            manual_ack=True,
        )

    def start(self) -> None:
        self._store_thread.start()
        self.connection.start()

    def is_ready(self) -> bool:
        """Connected with the results subscription acknowledged: a result published now reaches us."""
        client = self.connection.client
        return client.is_connected() and self._subscribed is client

    def stop(self) -> None:
        """Stop taking messages; what is not committed yet stays unacknowledged at the broker."""
        self._stopping.set()
        self.connection.stop()
        if self._store_thread.is_alive():
            self._store_thread.join(timeout=10)
        self.store.close()

    def run_forever(self, stop: threading.Event) -> None:
        """Serve until `stop` is set (the CLI sets it on SIGINT/SIGTERM)."""
        # The store thread validates in Python while paho's thread waits to send acks and receipts;
        # a short GIL switch interval keeps that wait (publish -> receipt latency) short.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()

    # -- orders ---------------------------------------------------------------------------------
    def send_order(self, site: str, device: str, sample: dict[str, Any], fields: int | None = None) -> str:
        """Send an order/1 on this server's connection; returns the order id."""
        order = build_order(sample, fields)
        publish_order(self.connection.client, site, device, order)
        return order["order_id"]

    # -- message path -----------------------------------------------------------------------------
    def _connected(self, client: mqtt.Client, session_present: bool) -> None:
        _, mid = client.subscribe([(self.subscription, 1), (self.media_subscription, 1)])
        self._subscribing = (client, mid)

    def _suback(self, client: mqtt.Client, mid: int, reason_codes: list[Any]) -> None:
        if self._subscribing != (client, mid):
            return
        self._subscribing = None
        if not any(code.is_failure for code in reason_codes):
            self._subscribed = client

    def _disconnected(self, client: mqtt.Client) -> None:
        if self._subscribed is client:
            self._subscribed = None

    def handle(self, topic_name: str, payload: bytes) -> Outcome:
        """Validate and store one message (committed on return). Public for tests and tools."""
        outcomes = self.intake.process([(topic_name, payload)])
        if outcomes is None:
            raise RuntimeError("the server stopped before the database came back")
        return outcomes[0]

    def _message(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        """paho's network thread: queue only (storing here would stall every socket of this client)."""
        self._arrivals.put(_Arrival(client, self.connection.stats.connects, message.topic, message.payload,
                                    message.mid, message.qos))

    def _store_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._arrivals.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self.config.max_batch:
                try:
                    batch.append(self._arrivals.get_nowait())
                except queue.Empty:
                    break
            try:
                outcomes = self.intake.process([(a.topic, a.payload) for a in batch])
            except Exception:  # noqa: BLE001 - never let the store thread die; the broker keeps the batch
                log.exception("could not store %d message(s); left unacknowledged", len(batch))
                self._stopping.wait(1.0)
                for arrival in batch:
                    self._arrivals.put(arrival)
                continue
            if outcomes is None:
                return  # stopping during an outage: unacknowledged, the broker redelivers after restart
            for arrival, outcome in zip(batch, outcomes):
                self._commits += 1
                if self._crash_after is not None and self._commits >= self._crash_after:
                    log.error("fault injection: SIGKILL after commit %d, before ack", self._commits)
                    os.kill(os.getpid(), signal.SIGKILL)
                self._acknowledge(arrival, outcome)

    def _acknowledge(self, arrival: _Arrival, outcome: Outcome) -> None:
        """Ack on the connection the message came on; after a reconnect the broker resends it (a duplicate)."""
        client = arrival.client
        if client is not self.connection.client or arrival.connection != self.connection.stats.connects:
            return
        client.ack(arrival.mid, arrival.qos)
        self.processed += 1
        self._send_receipt(client, arrival.topic, outcome)

    def _send_receipt(self, client: mqtt.Client, topic_name: str, outcome: Outcome) -> None:
        parts = topic_name.split("/")
        if len(parts) != 5:
            return  # no device to answer
        try:
            receipts = topic(parts[2], parts[3], "receipts")
        except ValueError:
            return
        receipt: dict[str, Any] = {"result_id": outcome.result_id, "status": outcome.status}
        if outcome.key:
            receipt["key"] = outcome.key
        if outcome.reason:
            receipt["reason"] = outcome.reason
        client.publish(receipts, json.dumps(receipt).encode("utf-8"), qos=1, retain=False)

