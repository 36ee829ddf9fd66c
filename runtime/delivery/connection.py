"""One resilient paho-mqtt 2.x connection, shared by the device publisher and the server.

Designed around paho's traps: an exception escaping a callback kills the network thread, so every
callback is wrapped and its exceptions are counted and logged; a watchdog recreates the client if
its network thread died anyway. The session is persistent (MQTT 5, clean_start False, session
expiry > 0) so QoS 1 messages queued at the broker survive a reconnect, and the retained status
topic carries `online`, with `offline` as the last will.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from runtime.contracts.mqtt_settings import MqttSettings, TlsFiles  # noqa: F401  (TlsFiles: re-exported)

log = logging.getLogger(__name__)


@dataclass
class ConnectionStats:
    """Counters for reports and tests."""

    connects: int = 0
    disconnects: int = 0
    callback_errors: int = 0
    recreated: int = 0
    refused: list[str] = field(default_factory=list)


OnConnected = Callable[[mqtt.Client, bool], None]


@dataclass(frozen=True)
class ClientCallbacks:
    """What the owner of a connection hears; each runs on paho's network thread and must be quick."""

    on_connected: OnConnected | None = None  # (client, session_present)
    on_message: Callable[[mqtt.Client, mqtt.MQTTMessage], None] | None = None
    on_publish: Callable[[int, Any], None] | None = None  # (mid, reason code)
    on_disconnected: Callable[[mqtt.Client], None] | None = None
    on_recreated: Callable[[], None] | None = None  # the watchdog replaced a dead client
    on_subscribed: Callable[[mqtt.Client, int, list[Any]], None] | None = None  # (client, mid, reason codes)


class ResilientClient:
    """A paho client that keeps itself alive: contained callbacks, auto-reconnect, a watchdog.

    Owners supply plain callables; they run on paho's network thread and must be quick.
    """

    def __init__(
        self,
        settings: MqttSettings,
        callbacks: ClientCallbacks | None = None,
        *,
        status_topic: str | None = None,
        manual_ack: bool = False,
        watchdog_interval_s: float = 1.0,
    ) -> None:
        if settings.session_expiry_s <= 0:
            raise ValueError("session_expiry_s must be > 0 for a persistent session")
        self.settings = settings
        self.status_topic = status_topic
        self.manual_ack = manual_ack
        self.stats = ConnectionStats()
        self._callbacks = callbacks or ClientCallbacks()
        self._watchdog_interval_s = watchdog_interval_s
        self._stop = threading.Event()
        self._client_lock = threading.Lock()
        self.client = self._build()
        self._watchdog = threading.Thread(target=self._watch, name="mqtt-watchdog", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; paho retries until the broker answers."""
        self._start_client(self.client)
        self._watchdog.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Publish `offline` on the status topic, disconnect cleanly and stop all threads."""
        self._stop.set()
        with self._client_lock:
            client = self.client
        try:
            if self.status_topic and client.is_connected():
                info = client.publish(self.status_topic, b"offline", qos=1, retain=True)
                info.wait_for_publish(timeout=timeout_s)
            client.disconnect()
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("clean MQTT shutdown failed: %s", exc)
        client.loop_stop()
        if self._watchdog.is_alive():
            self._watchdog.join(timeout=timeout_s)

    def is_connected(self) -> bool:
        return self.client.is_connected()

    def network_thread_alive(self) -> bool:
        """paho keeps its loop thread in a private attribute; no public accessor exists."""
        thread = getattr(self.client, "_thread", None)
        return thread is not None and thread.is_alive()

    # -- building -----------------------------------------------------------------------------
    def _build(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=self.manual_ack,
        )
        client.suppress_exceptions = True  # second line of defence behind _contained
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=max(1, int(s.reconnect_min_s)), max_delay=max(1, int(s.reconnect_max_s)))
        if s.tls is not None:
            client.tls_set(
                ca_certs=str(s.tls.ca), certfile=str(s.tls.cert), keyfile=str(s.tls.key),
                cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if self.status_topic:
            client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        client.on_connect = self._contained(self._handle_connect)
        client.on_disconnect = self._contained(self._handle_disconnect)
        client.on_message = self._contained(self._handle_message)
        client.on_publish = self._contained(self._handle_publish)
        client.on_subscribe = self._contained(self._handle_subscribe)
        return client

    def _start_client(self, client: mqtt.Client) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        client.connect_async(
            self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s,
            clean_start=False, properties=props,
        )
        client.loop_start()

    def _contained(self, fn: Callable[..., None]) -> Callable[..., None]:
        """Wrap a callback so no exception reaches paho's network thread."""

        def wrapper(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - the point is that nothing escapes to paho
                self.stats.callback_errors += 1
                log.exception("MQTT callback %s failed; contained", fn.__name__)

        wrapper.__name__ = fn.__name__
        return wrapper

    # -- watchdog -----------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(self._watchdog_interval_s):
            try:
                if not self.network_thread_alive():
                    self._recreate()
            except Exception:  # noqa: BLE001 - the watchdog itself must survive
                log.exception("MQTT watchdog could not recreate the client")

    def _recreate(self) -> None:
        log.warning("MQTT network thread died; recreating the client")
        with self._client_lock:
            if self._stop.is_set():
                return
            old = self.client
            try:
                old.loop_stop()
                old.disconnect()
            except (RuntimeError, ValueError, OSError):
                pass
            self.client = self._build()
            self.stats.recreated += 1
            self._start_client(self.client)
        if self._callbacks.on_recreated:
            self._callbacks.on_recreated()

    # -- callbacks (paho VERSION2 signatures) ---------------------------------------------------
    def _handle_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.stats.refused.append(str(reason_code))
            log.error("broker refused the connection: %s", reason_code)
            return
        self.stats.connects += 1
        log.info("connected to broker %s:%s (session present: %s)", self.settings.host, self.settings.port,
                 bool(getattr(flags, "session_present", False)))
        if self.status_topic:
            client.publish(self.status_topic, b"online", qos=1, retain=True)
        if self._callbacks.on_connected:
            self._callbacks.on_connected(client, bool(getattr(flags, "session_present", False)))

    def _handle_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.stats.disconnects += 1
        if self._callbacks.on_disconnected:
            self._callbacks.on_disconnected(client)

    def _handle_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._callbacks.on_message:
            self._callbacks.on_message(client, message)

    def _handle_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        if self._callbacks.on_publish:
            self._callbacks.on_publish(mid, reason_code)

    def _handle_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        for code in reason_codes:
            if code.is_failure:
                log.error("subscription refused: %s", code)
        if self._callbacks.on_subscribed:
            self._callbacks.on_subscribed(client, mid, list(reason_codes))


def publish_ok(info: mqtt.MQTTMessageInfo) -> bool:
    """True when paho accepted a publish for sending."""
    return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
