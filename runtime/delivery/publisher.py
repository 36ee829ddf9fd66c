"""The device's MQTT publisher: outbox in, receipts out (implements the runtime's Publisher protocol).

`publish(result)` validates the result, enforces the size limit and writes it to the outbox, all
before returning: once it returns, the result survives a crash. A sender thread publishes pending
rows at QoS 1 (never retained) while connected, keeping at most `window` unreceipted messages in
flight; one without a receipt after `resend_after_s` is sent again with the same `result_id`.
A row leaves the outbox only when the server's receipt arrives on the device's receipts topic.
On every connection the sender waits for the broker's SUBACK of that topic before it sends: a
receipt published before the subscription is active would be dropped by the broker.

`publish_with_field_image(result, frame)` also queues the analysed frame as JPEG parts on the media
topic, in the same outbox transaction as the result; the same sender, window and resend rule carry
both, and each part leaves the outbox on its own receipt (docs/delivery.md, "Field images").
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from runtime.delivery.connection import ClientCallbacks, MqttSettings, ResilientClient, publish_ok
from runtime.delivery.media import MediaError, MediaPart, encode_jpeg, split_image
from runtime.delivery.orders import parse_order
from runtime.delivery.topics import check_name, topic
from runtime.delivery.outbox import Outbox
from runtime.contracts.schema import validate

log = logging.getLogger(__name__)

# PUBACK reason codes after which resending the same bytes cannot succeed.
PERMANENT_PUBACK_FAILURES = {0x87: "not authorised", 0x95: "packet too large", 0x99: "payload format invalid",
                             0x90: "topic name invalid"}
QUOTA_EXCEEDED = 0x97
NO_MATCHING_SUBSCRIBERS = 0x10


@dataclass(frozen=True)
class MediaSettings:
    """Whether the device sends each analysed field's image, and its JPEG quality (1-100)."""

    field_images: bool = True
    jpeg_quality: int = 85


@dataclass(frozen=True)
class DeliverySettings:
    """How the sender works through the outbox: at most `window` unreceipted messages in flight, a
    message without a receipt after `resend_after_s` sent again (same id), and field images."""

    window: int = 50
    resend_after_s: float = 30.0
    media: MediaSettings = MediaSettings()


@dataclass
class PublisherStats:
    """What happened since this publisher started (`sent` and `receipts` count results; media parts
    are counted apart)."""

    enqueued: int = 0
    sent: int = 0
    media_sent: int = 0
    media_receipts: int = 0
    pubacked: int = 0
    puback_failures: int = 0
    no_subscribers: int = 0
    receipts: int = 0
    resends: int = 0
    max_depth: int = 0


class MqttPublisher:
    """Durable, receipted delivery of result/1 messages from one device."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        site: str,
        device_id: str,
        outbox: Outbox,
        delivery: DeliverySettings = DeliverySettings(),
        on_order: Callable[[dict[str, Any]], None] | None = None,
        event_log: str | Path | None = None,
    ) -> None:
        window, resend_after_s, media = delivery.window, delivery.resend_after_s, delivery.media
        self.site = check_name(site, "site")
        self.device_id = check_name(device_id, "device")
        self.outbox = outbox
        self.window = window
        self.resend_after_s = resend_after_s
        self.on_order = on_order
        self.media = media
        self.stats = PublisherStats()
        self.results_topic = topic(site, device_id, "results")
        self.media_topic = topic(site, device_id, "media")
        self.receipts_topic = topic(site, device_id, "receipts")
        self.orders_topic = topic(site, device_id, "orders")
        self._lock = threading.Lock()
        self._inflight: dict[str, float] = {}  # result_id -> monotonic time of last send
        self._mids: dict[int, str] = {}  # paho mid -> result_id, for PUBACK reason codes
        self._early_acks: dict[int, tuple[float, Any]] = {}  # PUBACKs that beat the mid bookkeeping
        self._wake = threading.Event()
        self._stop = threading.Event()
        # The client whose receipts subscription the broker has acknowledged (None: not hearing receipts).
        self._hearing: mqtt.Client | None = None
        self._receipts_sub: tuple[mqtt.Client, int] | None = None  # (client, SUBSCRIBE mid) awaiting SUBACK
        self._event_fd = os.open(str(event_log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if event_log else None
        self.connection = ResilientClient(
            settings if settings.client_id else _with_client_id(settings, device_id),
            ClientCallbacks(on_connected=self._connected, on_message=self._message, on_publish=self._published,
                            on_recreated=self._client_replaced, on_subscribed=self._subscribed,
                            on_disconnected=self._disconnected),
            status_topic=topic(site, device_id, "status"),
        )
        self._sender = threading.Thread(target=self._send_loop, name="outbox-sender", daemon=True)
        self.connection.start()
        self._sender.start()

    # -- Publisher protocol ---------------------------------------------------------------------
    def publish(self, result: Mapping[str, Any]) -> None:
        """Validate, size-check and durably queue one result; sending happens in the background."""
        self._queue(result, ())

    def publish_with_field_image(self, result: Mapping[str, Any], frame: Any) -> None:
        """Queue a result and its analysed frame (JPEG parts) in one transaction; frame only if enabled.
        A frame that cannot be sent (not encodable, over the image limits) never costs the result."""
        parts: list[MediaPart] = []
        if self.media.field_images:
            try:
                jpeg = encode_jpeg(frame, self.media.jpeg_quality)
                parts = split_image(str(result["result_id"]), "field", jpeg, "image/jpeg",
                                    self.outbox.max_payload_bytes)
            except MediaError as exc:
                log.error("field image of result %s not sent: %s", result.get("result_id"), exc)
        self._queue(result, parts)

    def _queue(self, result: Mapping[str, Any], parts: Sequence[MediaPart]) -> None:
        result = dict(result)
        if result.get("device_id") != self.device_id:
            raise ValueError(f"result device_id {result.get('device_id')!r} is not this device ({self.device_id!r})")
        validate(result)
        self.outbox.enqueue(result, parts)
        depth = self.outbox.depth()
        self.stats.enqueued += 1
        self.stats.max_depth = max(self.stats.max_depth, depth)
        self._event("enqueue", result["result_id"], str(depth))
        self._wake.set()

    def close(self) -> None:
        """Stop sending and hearing receipts; unreceipted rows stay in the outbox for the next start."""
        self._stop.set()
        self._wake.set()
        self._sender.join(timeout=5)
        self.connection.stop()
        if self._event_fd is not None:
            os.close(self._event_fd)
            self._event_fd = None

    # -- helpers for callers ----------------------------------------------------------------------
    def is_ready(self) -> bool:
        """Connected, and the broker has acknowledged the subscription that brings receipts."""
        client = self.connection.client
        return client.is_connected() and self._hearing is client and not self._stop.is_set()

    def wait_drained(self, timeout_s: float) -> bool:
        """Block until every queued result has its receipt (True) or the timeout passes (False).

        A closed publisher neither resends nor hears receipts, so it answers at once.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            if self.outbox.depth() == 0:
                return True
            time.sleep(0.05)
        return self.outbox.depth() == 0

    # -- sender -----------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            try:
                self._send_due()
            except Exception:  # noqa: BLE001 - the sender must outlive any one bad tick
                log.exception("outbox sender tick failed")
                time.sleep(0.5)

    def _send_due(self) -> None:
        if not self.is_ready():
            return
        now = time.monotonic()
        with self._lock:
            for rid in [r for r, t in self._inflight.items() if now - t > self.resend_after_s]:
                del self._inflight[rid]
                self.stats.resends += 1
            for mid in [m for m, (t, _) in self._early_acks.items() if now - t > 10.0]:
                del self._early_acks[mid]  # a PUBACK for a message paho sent on its own; never ours to match
            free = self.window - len(self._inflight)
            busy = set(self._inflight)
        if free <= 0:
            return
        for row in self.outbox.pending(free, exclude=busy):
            client = self.connection.client
            target = self.media_topic if row.kind == "media" else self.results_topic
            info = client.publish(target, row.payload, qos=1, retain=False)
            if not publish_ok(info):
                break
            if row.kind == "media":
                self.stats.media_sent += 1
            else:
                self.stats.sent += 1
            self._event("sent", row.result_id)
            with self._lock:
                self._inflight[row.result_id] = time.monotonic()
                self._mids[info.mid] = row.result_id
                early = self._early_acks.pop(info.mid, None)
            if early is not None:
                self._published(info.mid, early[1])
            self.outbox.mark_attempt(row.result_id)

    # -- callbacks (paho network thread) ----------------------------------------------------------
    def _connected(self, client: mqtt.Client, session_present: bool) -> None:
        self._event("connect", "session" if session_present else "new")
        self._hearing = None
        _, mid = client.subscribe(self.receipts_topic, qos=1)
        self._receipts_sub = (client, mid)
        client.subscribe(self.orders_topic, qos=1)

    def _subscribed(self, client: mqtt.Client, mid: int, reason_codes: list[Any]) -> None:
        """SUBACK of the receipts subscription: from now on a receipt reaches us, so sending may start.

        A refused subscription (logged by the connection) still starts sending, so that the broker's
        PUBACK reason code can hold rows it refuses too; such a device resends until its ACL is fixed.
        """
        if self._receipts_sub != (client, mid):
            return
        self._receipts_sub = None
        self._hearing = client
        self._event("subscribed", ",".join(hex(int(getattr(c, "value", 0))) for c in reason_codes))
        self._wake.set()

    def _disconnected(self, client: mqtt.Client) -> None:
        """Until the next SUBACK a receipt may be dropped (paho reports a reconnect as connected first)."""
        if self._hearing is client:
            self._hearing = None

    def _client_replaced(self) -> None:
        """A new paho client numbers its messages afresh; the old numbers mean nothing now."""
        with self._lock:
            self._mids.clear()
            self._early_acks.clear()

    def _published(self, mid: int, reason_code: Any) -> None:
        with self._lock:
            rid = self._mids.pop(mid, None)
            if rid is None:
                self._early_acks[mid] = (time.monotonic(), reason_code)
                return
        value = int(getattr(reason_code, "value", 0))
        if value >= 0x80:
            self.stats.puback_failures += 1
            self._event("puback-fail", rid, hex(value))
            if value in PERMANENT_PUBACK_FAILURES:
                self.outbox.hold(rid, f"broker refused: {PERMANENT_PUBACK_FAILURES[value]} ({value:#x})")
                log.error("broker refused result %s: %s", rid, PERMANENT_PUBACK_FAILURES[value])
            # quota exceeded and others: leave in flight; resent after resend_after_s
            return
        self.stats.pubacked += 1
        if value == NO_MATCHING_SUBSCRIBERS:
            self.stats.no_subscribers += 1
        self._event("puback", rid, hex(value))

    def _message(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.receipts_topic:
            self._receipt(message.payload)
        elif message.topic == self.orders_topic:
            order = parse_order(message.payload)
            self._event("order", order["order_id"])
            if self.on_order is not None:
                self.on_order(order)

    def _receipt(self, payload: bytes) -> None:
        receipt = json.loads(payload.decode("utf-8"))
        # A media part's receipt names its outbox key; a result's is its result_id.
        rid, status = receipt.get("key") or receipt.get("result_id"), receipt.get("status")
        if not isinstance(rid, str) or not isinstance(status, str):
            log.warning("receipt without result_id/status ignored")
            return
        outcome = status if status != "rejected" else f"rejected:{receipt.get('reason', 'unknown')}"
        if outcome.startswith("rejected"):
            log.error("server rejected result %s: %s", rid, outcome)
        removed = self.outbox.acknowledge(rid, outcome)
        with self._lock:
            self._inflight.pop(rid, None)
        if "key" in receipt:
            self.stats.media_receipts += 1
        else:
            self.stats.receipts += 1
        self._event("receipt", rid, outcome if removed else outcome + ",unknown")
        self._wake.set()

    def _event(self, kind: str, *fields: str) -> None:
        """Append one line to the delivery event log (an audit trail that survives SIGKILL)."""
        if self._event_fd is not None:
            os.write(self._event_fd, (" ".join((f"{time.time():.3f}", kind, *fields)) + "\n").encode())


def _with_client_id(settings: MqttSettings, device_id: str) -> MqttSettings:
    return settings.connection(client_id=f"device-{device_id}")
