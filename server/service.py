"""The subscriber behind `smearscope serve`: validate, store, commit, then ack, then receipt.

Messages arrive with manual acknowledgement (paho `manual_ack=True`): the broker considers a
message delivered only after the store has committed it, so a server killed between commit and ack
gets the message again (from the broker, or as the device's resend) and the store answers
`duplicate`. Several server processes can share the load through an MQTT 5 shared subscription
(`$share/<group>/smearscope/v1/+/+/results`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from typing import Any

import paho.mqtt.client as mqtt

from runtime.delivery.connection import ClientCallbacks, ResilientClient
from runtime.delivery.topics import results_filter, topic
from server.config import ServerConfig
from server.orders import build_order, publish_order
from server.store import Outcome, Store
from server.validation import Accepted, check_message

log = logging.getLogger(__name__)

#: Fault injection for the delivery tests: SIGKILL this process right after the Nth commit, before its ack.
CRASH_AFTER_COMMITS_ENV = "SMEARSCOPE_SERVER_CRASH_AFTER_COMMITS"


class ResultServer:
    """One server process: a resilient MQTT connection and a store."""

    def __init__(self, config: ServerConfig, store: Store | None = None) -> None:
        self.config = config
        self.store = store or Store(config.database_url())
        self.processed = 0
        self._commits = 0
        crash = os.environ.get(CRASH_AFTER_COMMITS_ENV)
        self._crash_after = int(crash) if crash else None
        self._store_lock = threading.Lock()
        self.subscription = results_filter(config.site, config.share_group)
        self._subscribing: tuple[mqtt.Client, int] | None = None  # (client, SUBSCRIBE mid) awaiting SUBACK
        self._subscribed: mqtt.Client | None = None
        self.connection = ResilientClient(
            config.broker.settings(config.base_dir),
            ClientCallbacks(on_connected=self._connected, on_message=self._message, on_subscribed=self._suback,
                            on_disconnected=self._disconnected),
            manual_ack=True,
        )

    def start(self) -> None:
        self.connection.start()

    def is_ready(self) -> bool:
        """Connected with the results subscription acknowledged: a result published now reaches us."""
        client = self.connection.client
        return client.is_connected() and self._subscribed is client

    def stop(self) -> None:
        self.connection.stop()
        self.store.close()

    def run_forever(self, stop: threading.Event) -> None:
        """Serve until `stop` is set (the CLI sets it on SIGINT/SIGTERM)."""
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
        _, mid = client.subscribe(self.subscription, qos=1)
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
        checked = check_message(topic_name, payload, self.config.max_payload_bytes)
        with self._store_lock:
            if isinstance(checked, Accepted):
                outcome = self.store.record(checked)
            else:
                log.warning("rejected message on %s: %s (%s)", topic_name, checked.reason, checked.detail)
                outcome = self.store.reject(topic_name, checked, payload)
        return outcome

    def _message(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        try:
            outcome = self.handle(message.topic, message.payload)
        except Exception:
            # Not committed, so not acked: the broker or the device's resend brings it back.
            log.exception("could not store a message from %s; left unacknowledged", message.topic)
            return
        self._commits += 1
        if self._crash_after is not None and self._commits >= self._crash_after:
            log.error("fault injection: SIGKILL after commit %d, before ack", self._commits)
            os.kill(os.getpid(), signal.SIGKILL)
        client.ack(message.mid, message.qos)
        self.processed += 1
        self._send_receipt(client, message.topic, outcome)

    def _send_receipt(self, client: mqtt.Client, topic_name: str, outcome: Outcome) -> None:
        parts = topic_name.split("/")
        if len(parts) != 5:
            return  # no device to answer
        try:
            receipts = topic(parts[2], parts[3], "receipts")
        except ValueError:
            return
        receipt: dict[str, Any] = {"result_id": outcome.result_id, "status": outcome.status}
        if outcome.reason:
            receipt["reason"] = outcome.reason
        client.publish(receipts, json.dumps(receipt).encode("utf-8"), qos=1, retain=False)

