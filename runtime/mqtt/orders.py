"""Orders: the server tells a device which sample comes next (pseudonymous ids and lab values).

The device attaches the current order's `sample` to the next captures: for `fields` captures when
the order says how many, otherwise until the next order arrives.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any

from runtime.errors import SchemaError
from runtime.schema import validate

ORDER_SCHEMA = "order-1"


def parse_order(payload: bytes) -> dict[str, Any]:
    """Decode and validate an order/1 message; raises SchemaError on anything else."""
    try:
        order = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"order is not UTF-8 JSON: {exc}") from exc
    validate(order, ORDER_SCHEMA)
    return order


class OrderBook:
    """Thread-safe queue of orders; pass `book.add` as the publisher's `on_order`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._orders: deque[dict[str, Any]] = deque()
        self._left: dict[str, int | None] = {}

    def add(self, order: dict[str, Any]) -> None:
        """Queue an order; an order without `fields` replaces any open-ended one before it."""
        with self._lock:
            while self._orders and self._left.get(self._orders[-1]["order_id"]) is None:
                self._left.pop(self._orders.pop()["order_id"], None)
            self._orders.append(order)
            self._left[order["order_id"]] = order.get("fields")

    def current_sample(self) -> dict[str, Any] | None:
        """The `sample` block for the next capture, or None when no order is open."""
        with self._lock:
            return dict(self._orders[0]["sample"]) if self._orders else None

    def capture_done(self) -> None:
        """Count one capture against the current order; a finished order gives way to the next."""
        with self._lock:
            if not self._orders:
                return
            oid = self._orders[0]["order_id"]
            left = self._left.get(oid)
            if left is None:
                return
            if left <= 1:
                self._orders.popleft()
                self._left.pop(oid, None)
            else:
                self._left[oid] = left - 1
