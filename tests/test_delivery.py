"""The delivery path in the default run: a smaller version of the fault test (real processes, real
Mosquitto): the server killed between commit and ack, the broker killed once, the device killed
once with rows in its outbox; every result stored exactly once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from mqtt_helpers import MOSQUITTO, certs, outbox_depth, receipted_count, stored_ids, wait_for  # noqa: F401 (fixture)
from test_delivery_faults import Rig, check_exactly_once, duplicates_absorbed, event_figures

pytestmark = [pytest.mark.mosquitto, pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")]


@pytest.mark.timeout(180)
def test_small_run_with_one_kill_of_each_is_exactly_once(tmp_path: Path, certs: Path) -> None:
    count = 120
    rig = Rig(tmp_path, certs, count, interval_s=0.02, resend_after_s=2.0)
    rig.broker.start()
    try:
        rig.start_server(crash_after=15)
        rig.start_device()
        wait_for(lambda: rig.server.poll() is not None, 60, "the server's fault injection")
        assert rig.server.returncode == -signal.SIGKILL
        rig.start_server()

        wait_for(lambda: rig.queued() >= 50, 60, "50 queued")
        rig.broker.kill()
        wait_for(lambda: outbox_depth(rig.outbox) >= 10, 30, "rows in the outbox")
        depth = rig.kill_device()
        rig.start_device()
        time.sleep(0.5)
        rig.broker.start()

        wait_for(lambda: rig.queued() == count and outbox_depth(rig.outbox) == 0, 120, "the outbox to drain")
        assert rig.device.wait(30) == 0, rig.logs()
        assert depth > 0
        check_exactly_once(rig.db, count)
        figures = event_figures(rig.events)
        assert receipted_count(rig.outbox) == count  # every result's receipt, on disk
        # the event log's lines: the device was killed once, which can take the line of a receipt
        # it had already committed
        assert figures["sent"] >= count and figures["receipts"] >= count - 1
        assert len(stored_ids(rig.db)) == count
        # the message committed before the crash came back and was absorbed, not stored twice
        assert duplicates_absorbed(rig.db) >= 1
    finally:
        rig.shutdown()
