"""Orders: the server sends a sample's context (pseudonymous ids, lab values) to one device.

Published at QoS 1, never retained, on smearscope/v1/{site}/{device}/orders; the device's
persistent session holds it while the device is offline.
"""

from __future__ import annotations

import json
import time
from typing import Any

import paho.mqtt.client as mqtt

from runtime.contracts.errors import SmearscopeError
from runtime.contracts.ids import uuid7
from runtime.delivery.connection import ResilientClient
from runtime.delivery.topics import topic
from runtime.contracts.schema import validate
from server.config import ServerConfig


def build_order(sample: dict[str, Any], fields: int | None = None) -> dict[str, Any]:
    """A validated order/1 message."""
    order: dict[str, Any] = {"schema": "order/1", "order_id": uuid7(), "sample": sample,
                             "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if fields is not None:
        order["fields"] = fields
    validate(order, "order-1")
    return order


def publish_order(client: mqtt.Client, site: str, device: str, order: dict[str, Any], timeout_s: float = 10) -> None:
    """Publish on a connected client and wait for the broker's PUBACK."""
    info = client.publish(topic(site, device, "orders"), json.dumps(order, separators=(",", ":")).encode("utf-8"),
                          qos=1, retain=False)
    info.wait_for_publish(timeout=timeout_s)
    if not info.is_published():
        raise SmearscopeError(f"order {order['order_id']} was not acknowledged by the broker within {timeout_s:g} s")


def send_order_once(config: ServerConfig, site: str, device: str, sample: dict[str, Any],
                    fields: int | None = None, timeout_s: float = 15) -> str:
    """Connect with its own client id (never the serving process's), send one order, disconnect."""
    settings = config.broker.settings(config.base_dir).connection(client_id=f"{config.broker.client_id}-orders",
                                                                  session_expiry_s=60)
    order = build_order(sample, fields)
    connection = ResilientClient(settings)
    connection.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not connection.is_connected():
            if time.monotonic() > deadline:
                raise SmearscopeError(f"cannot reach the broker at {settings.host}:{settings.port}")
            time.sleep(0.05)
        publish_order(connection.client, site, device, order, timeout_s)
    finally:
        connection.stop()
    return order["order_id"]
