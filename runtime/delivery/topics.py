"""The topic contract: smearscope/v1/{site}/{device}/{results|media|receipts|status|orders}.

No patient identifiers ever appear in a topic. Site and device names are restricted to the same
characters as the result schema's device_id, so they can never smuggle MQTT wildcards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "smearscope/v1"
KINDS = ("results", "media", "receipts", "status", "orders")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TopicError(ValueError):
    """A topic or a name used to build one does not follow the contract."""


@dataclass(frozen=True)
class Topic:
    """A parsed smearscope topic."""

    site: str
    device: str
    kind: str

    def __str__(self) -> str:
        return f"{ROOT}/{self.site}/{self.device}/{self.kind}"


def check_name(value: str, what: str) -> str:
    """Return `value` if it is a valid site/device name, else raise TopicError naming `what`."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise TopicError(f"{what} {value!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    return value


def topic(site: str, device: str, kind: str) -> str:
    """Build the topic string for one site, device and kind."""
    if kind not in KINDS:
        raise TopicError(f"unknown topic kind {kind!r}; expected one of {', '.join(KINDS)}")
    return str(Topic(check_name(site, "site"), check_name(device, "device"), kind))


def parse(value: str) -> Topic:
    """Parse a concrete topic (no wildcards) or raise TopicError."""
    parts = value.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != ROOT or parts[4] not in KINDS:
        raise TopicError(f"not a smearscope topic: {value!r}")
    return Topic(check_name(parts[2], "site"), check_name(parts[3], "device"), parts[4])


def results_filter(site: str = "+", share_group: str | None = None, kind: str = "results") -> str:
    """The server's subscription: every device's results (or media), optionally MQTT 5 shared."""
    if kind not in ("results", "media"):
        raise TopicError(f"a server subscribes to results and media, not {kind!r}")
    base = f"{ROOT}/{site if site == '+' else check_name(site, 'site')}/+/{kind}"
    return f"$share/{check_name(share_group, 'share group')}/{base}" if share_group else base
