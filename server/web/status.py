"""Device availability as the server sees it: the retained `status` topic (`online`, and `offline`
from a clean stop or the broker's last will), stored so the devices page can show it.

A plain (not shared) subscription of its own: MQTT 5 brokers do not deliver retained messages to
shared subscriptions, and every server process should know every device's state.
"""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as mqtt

from runtime.delivery.connection import ClientCallbacks, ResilientClient
from runtime.delivery.topics import ROOT, TopicError, parse
from server.config import ServerConfig
from server.web.db import Database

log = logging.getLogger(__name__)
STATUS_FILTER = f"{ROOT}/+/+/status"
STATES = ("online", "offline")


def record_status(db: Database, topic_name: str, payload: bytes) -> bool:
    """Store one status message; False (and nothing stored) for a topic or payload off the contract."""
    try:
        parsed = parse(topic_name)
    except TopicError:
        return False
    state = payload.decode("utf-8", errors="replace").strip().lower()[:16]
    if parsed.kind != "status" or state not in STATES:
        log.warning("status message off the contract on %s", topic_name)
        return False
    db.set_device_status(parsed.site, parsed.device, state)
    return True


class StatusWatcher:
    """Subscribes to every device's status topic and records each change."""

    def __init__(self, config: ServerConfig, db: Database) -> None:

        self.db = db
        settings = config.broker.connection(base_dir=config.base_dir, client_id=f"{config.broker.client_id}-status")
        self.connection = ResilientClient(settings, ClientCallbacks(on_connected=self._connected, on_message=self._message))

    def start(self) -> None:
        self.connection.start()

    def stop(self) -> None:
        self.connection.stop()

    def _connected(self, client: mqtt.Client, session_present: bool) -> None:
        client.subscribe(STATUS_FILTER, qos=1)

    def _message(self, client: mqtt.Client, message: Any) -> None:
        record_status(self.db, message.topic, message.payload)
