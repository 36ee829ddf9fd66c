"""Orders: the server tells a device which sample comes next (pseudonymous ids and lab values).

The publisher hands each valid order/1 to its `on_order` callback; the device loop turns it into a
sample change (runtime.device.assembly.order_to_event) and attaches the sample to its next `fields`
captures, or to every capture until the next order when `fields` is absent.
"""

from __future__ import annotations

import json
from typing import Any

from runtime.contracts.errors import SchemaError
from runtime.contracts.schema import validate

ORDER_SCHEMA = "order-1"


def parse_order(payload: bytes) -> dict[str, Any]:
    """Decode and validate an order/1 message; raises SchemaError on anything else."""
    try:
        order = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"order is not UTF-8 JSON: {exc}") from exc
    validate(order, ORDER_SCHEMA)
    return order
