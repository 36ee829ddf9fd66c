"""Poison-proof intake: every message ends stored, duplicate or rejected, except while the database is down.

A batch is validated, then written in one transaction. When that transaction fails, the database
is asked whether it is up (`Store.ping`):
- it is not (connection lost, server down, locked, disk): nothing is blamed on the messages; the
  batch is retried with exponential back-off until the database is back, and stays unacknowledged;
- it is: something in the batch cannot be stored although it passed validation. The batch is
  written again in one transaction with a savepoint per message; a message the database refuses
  is rolled back alone and rejected as `unstorable` with the database's error as its detail, so it
  is acknowledged and never comes back.
One bad message therefore costs its batch one more transaction, and never blocks the others.
Media parts (server.media) in a batch are written in a second transaction under the same rule.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.media import MediaIntake, is_media_topic
from server.store import Checked, Outcome, Store, StoreUnavailable, is_infrastructure_error
from server.validation import Rejected, check_message

log = logging.getLogger(__name__)

_DETAIL_MAX = 300


@dataclass(frozen=True)
class RetryPolicy:
    """Back-off while the database is unavailable: first wait, doubling up to `max_s`."""

    first_s: float = 0.2
    max_s: float = 2.0


class Intake:
    """Check and store messages for one server process (its single store thread calls `process`)."""

    def __init__(self, store: Store, max_payload_bytes: int, stop: threading.Event,
                 retry: RetryPolicy = RetryPolicy(), media: MediaIntake | None = None) -> None:
        self.store = store
        self.media = media  # None: media parts are rejected as `bad_topic` with the results' checks
        self.max_payload_bytes = max_payload_bytes
        self.stop = stop
        self.retry = retry
        self.outages = 0  # how many times the database was found unavailable

    def check(self, topic: str, payload: bytes) -> Checked:
        verdict = check_message(topic, payload, self.max_payload_bytes)
        if isinstance(verdict, Rejected):
            log.warning("rejected message on %s: %s (%s)", topic, verdict.reason, verdict.detail)
        return Checked(topic, payload, verdict)

    def process(self, messages: Sequence[tuple[str, bytes]]) -> list[Outcome] | None:
        """One outcome per message, all committed; None if asked to stop while the database was down."""
        media = [i for i, (topic, _) in enumerate(messages) if self.media is not None and is_media_topic(topic)]
        taken = set(media)
        results = [i for i in range(len(messages)) if i not in taken] if media else range(len(messages))
        outcomes: list[Outcome | None] = [None] * len(messages)
        if results:
            batch = [self.check(*messages[i]) for i in results]
            done = self._retrying(lambda: self._write_settling_poison(batch), len(batch))
            if done is None:
                return None
            for i, outcome in zip(results, done):
                outcomes[i] = outcome
        if media:
            assert self.media is not None
            parts = [messages[i] for i in media]
            done = self._retrying(lambda: self.media.write(parts), len(parts))
            if done is None:
                return None
            for i, outcome in zip(media, done):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    def _retrying(self, write: Callable[[], list[Outcome]], count: int) -> list[Outcome] | None:
        """`write()` until the database takes it; None if asked to stop while it was down."""
        wait = self.retry.first_s
        while True:
            try:
                return write()
            except Exception as exc:  # noqa: BLE001 - classified just below
                if not is_infrastructure_error(exc):
                    raise
                self.outages += 1
                log.warning("database unavailable (%s); %d message(s) left unacknowledged, retrying in %.1f s",
                            _one_line(exc), count, wait)
            if self.stop.wait(wait):
                return None
            wait = min(wait * 2, self.retry.max_s)

    def _write_settling_poison(self, batch: list[Checked]) -> list[Outcome]:
        try:
            return self.store.write(batch)
        except Exception as exc:  # noqa: BLE001 - a message's fault or the database's: ping decides
            if is_infrastructure_error(exc) or not self.store.ping():
                raise StoreUnavailable(_one_line(exc)) from exc
            log.warning("a batch of %d failed while the database is up (%s); isolating each message",
                        len(batch), _one_line(exc))
        return self.store.write_isolating(batch, self._unstorable)

    @staticmethod
    def _unstorable(item: Checked, exc: Exception) -> Checked:
        """The rejection that replaces a message the database refused."""
        detail = f"{type(exc).__name__}: {_one_line(exc)}"[:_DETAIL_MAX]
        v = item.verdict
        result_id = v.result_id if isinstance(v, Rejected) else v.result["result_id"]
        log.error("unstorable message on %s (%s): rejected", item.topic, detail)
        return Checked(_printable(item.topic), item.payload, Rejected("unstorable", detail, v.topic, result_id))


def _one_line(exc: BaseException) -> str:
    """An exception as one line of storable text (database errors span lines)."""
    return _printable(" ".join(str(exc).split()) or type(exc).__name__)


def _printable(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
