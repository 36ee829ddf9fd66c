"""The serial bridge against the simulated controller over a real pseudo-terminal.

Every press must reach poll_button exactly once, whatever the cable does: lost, corrupted,
split and merged bytes, an unplug/replug, a controller restart, a silent controller. LED
commands are acknowledged, or retried and reported as failed after the retry limit.
"""

from __future__ import annotations

import os
import time

import pytest

from firmware_bridge import open_bridge
from firmware_bridge.api import ACKED, DISCONNECTED, FAILED, SerialSettings
from firmware_bridge.serial_bridge import SerialBridge
from firmware_bridge.simulator import Faults, Simulator

# Short timings so the suite stays fast; the protocol does not care about the absolute values.
CONTROLLER_TIMING = {"heartbeat_ms": 50, "host_timeout_ms": 800, "retry_ms": 30, "retry_max_ms": 120}


def host_settings(port: str, **overrides) -> SerialSettings:
    values = {
        "port": port,
        "ack_timeout": 0.05,
        "max_retries": 5,
        "heartbeat_interval": 0.05,
        "heartbeat_timeout": 0.8,
        "reconnect_interval": 0.05,
    }
    values.update(overrides)
    return SerialSettings(**values)


def collect(bridge, count: int, timeout: float) -> list:
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        event = bridge.poll_button(0.05)
        if event is not None:
            events.append(event)
    return events


def assert_no_more_events(bridge, quiet_s: float = 0.4) -> None:
    extra = bridge.poll_button(quiet_s)
    assert extra is None, f"unexpected extra event {extra}"


def assert_presses_exactly_once(events, presses: int) -> None:
    assert [e.seq for e in events] == list(range(1, 2 * presses + 1))
    assert [e.action for e in events] == ["press", "release"] * presses


@pytest.fixture()
def sim_and_bridge(request):
    """A simulator with the faults given by the test's parameters, and a bridge on its pty."""
    params = getattr(request, "param", {})
    sim = Simulator(
        to_host=params.get("to_host"), to_controller=params.get("to_controller"), seed=1234, controller_options=CONTROLLER_TIMING
    ).start()
    bridge = SerialBridge(host_settings(sim.port_path, **params.get("host", {})))
    assert bridge.wait_connected(5), bridge.last_problem
    yield sim, bridge
    bridge.close()
    sim.close()


def test_the_port_is_a_real_pseudo_terminal(sim_and_bridge):
    sim, bridge = sim_and_bridge
    target = os.path.realpath(sim.port_path)
    assert target.startswith("/dev/pts/")
    assert bridge.info is not None and bridge.info.boot_id == sim.controller.boot_id


def test_clean_link_delivers_each_press_once(sim_and_bridge):
    sim, bridge = sim_and_bridge
    for _ in range(5):
        sim.press()
    events = collect(bridge, 10, timeout=5)
    assert_presses_exactly_once(events, 5)
    assert_no_more_events(bridge)
    assert bridge.stats.events_delivered == 10


FAULTS = {
    "byte-loss": {"to_host": Faults(drop=0.02), "to_controller": Faults(drop=0.02)},
    "corruption": {"to_host": Faults(corrupt=0.02), "to_controller": Faults(corrupt=0.02)},
    "split": {"to_host": Faults(split=1.0), "to_controller": Faults(split=1.0)},
    "merge": {"to_host": Faults(merge=0.7)},
    "everything": {
        "to_host": Faults(drop=0.01, corrupt=0.01, split=0.3, merge=0.3),
        "to_controller": Faults(drop=0.01, corrupt=0.01, split=1.0),
    },
}


@pytest.mark.parametrize("sim_and_bridge", list(FAULTS.values()), ids=list(FAULTS), indirect=True)
def test_every_press_arrives_exactly_once_under_faults(sim_and_bridge, request):
    sim, bridge = sim_and_bridge
    presses = 12
    for _ in range(presses):
        sim.press()
    events = collect(bridge, 2 * presses, timeout=20)
    assert_presses_exactly_once(events, presses)
    assert_no_more_events(bridge)
    # The fault really happened on the wire.
    fault = request.node.callspec.id
    if fault in ("byte-loss", "corruption", "everything"):
        assert bridge.stats.bad_frames + sim.controller.decoder.bad_frames > 0
        assert sim.controller.retransmissions > 0
    if fault == "split":
        assert sim.stats.split_writes > 0
    if fault == "merge":
        assert sim.stats.merged_writes > 0


def test_unplug_and_replug_loses_and_repeats_nothing(sim_and_bridge):
    sim, bridge = sim_and_bridge
    for _ in range(3):
        sim.press()
    before = collect(bridge, 6, timeout=5)
    assert sim.wait_idle(2)  # the board has every ACK (the in-flight case is tested below)
    sim.unplug()  # a self-powered board: the queue survives
    deadline = time.monotonic() + 3
    while bridge.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not bridge.connected
    sim.press()
    sim.press()  # pressed while the cable is out: queued on the board
    time.sleep(1.0)  # longer than the board's host timeout
    assert sim.controller.pending_events() == 4  # two presses, two releases
    assert sim.status_pattern == "offline"  # no host: the board says so by itself
    sim.replug()
    assert bridge.wait_connected(5), bridge.last_problem
    sim.press()
    after = collect(bridge, 6, timeout=5)
    assert_presses_exactly_once(before + after, 6)
    assert_no_more_events(bridge)
    assert bridge.stats.disconnects == 1 and bridge.stats.connects == 2


def test_event_in_flight_at_unplug_is_not_delivered_twice(sim_and_bridge):
    """The host got the press but its ACK was lost; after the replug the board resends it."""
    sim, bridge = sim_and_bridge
    sim.to_controller.drop = 1.0  # every ACK from the host is lost
    sim.press()
    first = collect(bridge, 1, timeout=3)
    assert [e.action for e in first] == ["press"]
    time.sleep(0.2)  # the board keeps resending the unacknowledged press
    sim.unplug()
    time.sleep(0.3)
    sim.to_controller.drop = 0.0
    sim.replug()
    assert bridge.wait_connected(5)
    rest = collect(bridge, 1, timeout=3)
    assert_presses_exactly_once(first + rest, 1)
    assert_no_more_events(bridge)
    assert bridge.stats.duplicate_events > 0


def test_power_loss_restarts_numbering_without_losing_new_presses(sim_and_bridge):
    sim, bridge = sim_and_bridge
    sim.press()
    sim.press()
    old = collect(bridge, 4, timeout=5)
    old_boot = bridge.info.boot_id
    sim.unplug(power_loss=True)
    time.sleep(0.3)
    sim.replug()
    assert bridge.wait_connected(5)
    deadline = time.monotonic() + 3
    while bridge.info.boot_id == old_boot and time.monotonic() < deadline:
        time.sleep(0.01)
    sim.press()
    sim.press()
    new = collect(bridge, 4, timeout=5)
    assert_presses_exactly_once(old, 2)
    assert_presses_exactly_once(new, 2)  # event numbers start again at 1 and are not "duplicates"
    assert {e.boot_id for e in new} == {sim.controller.boot_id} != {old_boot}


def test_controller_restart_without_unplug_is_noticed_by_its_heartbeat(sim_and_bridge):
    sim, bridge = sim_and_bridge
    old_boot = bridge.info.boot_id
    sim.reboot()
    deadline = time.monotonic() + 3
    while (bridge.info.boot_id == old_boot or not bridge.connected) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bridge.info.boot_id == sim.controller.boot_id != old_boot
    sim.press()
    assert_presses_exactly_once(collect(bridge, 2, timeout=5), 1)


def test_lost_heartbeat_disconnects_then_reconnects(sim_and_bridge):
    sim, bridge = sim_and_bridge
    sim.freeze(1.5)
    deadline = time.monotonic() + 2
    while bridge.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not bridge.connected
    assert bridge.stats.heartbeat_losses >= 1
    assert bridge.wait_connected(5)
    sim.press()
    assert_presses_exactly_once(collect(bridge, 2, timeout=5), 1)


def test_led_commands_are_acknowledged(sim_and_bridge):
    sim, bridge = sim_and_bridge
    command = bridge.set_status("busy")
    assert command.wait(2) and command.outcome == ACKED and command.attempts == 1
    assert sim.status_pattern == "busy"
    assert bridge.set_illumination(180).wait(2)
    assert sim.illumination == 180


@pytest.mark.parametrize(
    "sim_and_bridge", [{"to_controller": Faults(drop=0.05), "host": {"max_retries": 8}}], indirect=True
)
def test_led_commands_are_retried_through_a_lossy_link(sim_and_bridge):
    sim, bridge = sim_and_bridge
    commands = [bridge.set_status(state) for state in ("busy", "idle", "error", "busy", "idle") * 3]
    assert all(c.wait(5) for c in commands), [c for c in commands if not c.ok]
    assert sum(c.attempts for c in commands) > len(commands)  # some frames were lost and resent
    assert sim.status_pattern == "idle"


def test_led_command_fails_after_the_retry_limit(sim_and_bridge):
    sim, bridge = sim_and_bridge
    applied = sim.controller.commands_applied
    sim.to_controller.drop = 1.0  # the board still talks, but hears nothing
    command = bridge.set_status("error")
    assert command.wait(5) is False
    assert command.outcome == FAILED
    assert command.attempts == bridge.settings.max_retries + 1
    assert sim.controller.commands_applied == applied
    assert bridge.stats.commands_failed == 1
    assert bridge.connected  # a deaf board is not a lost link: its heartbeat still arrives
    sim.to_controller.drop = 0.0
    assert bridge.set_status("error").wait(2)
    assert sim.status_pattern == "error"


def test_status_is_restored_after_the_board_restarts(sim_and_bridge):
    sim, bridge = sim_and_bridge
    assert bridge.set_status("busy").wait(2)
    assert bridge.set_illumination(90).wait(2)
    sim.unplug(power_loss=True)
    assert bridge.set_status("error").outcome in (DISCONNECTED, None)  # remembered while away
    sim.replug()
    assert bridge.wait_connected(5)
    deadline = time.monotonic() + 3
    while (sim.status_pattern, sim.illumination) != ("error", 90) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (sim.status_pattern, sim.illumination) == ("error", 90)


def test_close_leaves_the_board_showing_offline(sim_and_bridge):
    sim, bridge = sim_and_bridge
    assert bridge.set_status("idle").wait(2)
    bridge.close()
    assert sim.status_pattern == "offline"


def test_a_board_speaking_another_protocol_version_is_refused(monkeypatch):
    from firmware_bridge import wire

    with Simulator(seed=3, controller_options=CONTROLLER_TIMING) as sim:
        monkeypatch.setattr(wire, "PROTOCOL_VERSION", wire.PROTOCOL_VERSION + 1)  # the board's view
        bridge = SerialBridge(host_settings(sim.port_path))  # still sends version 1 in HELLO
        try:
            assert not bridge.wait_connected(0.5)
            assert "UNSUPPORTED_VERSION" in bridge.last_problem
            assert sim.status_pattern == "offline"
        finally:
            bridge.close()


def test_open_bridge_simulator_type_runs_end_to_end():
    with open_bridge({"type": "simulator", "seed": 7, "serial": {"heartbeat_timeout": 1.0}}) as bridge:
        assert bridge.wait_connected(5)
        bridge.simulator.press()
        assert_presses_exactly_once(collect(bridge, 2, timeout=5), 1)
        assert bridge.set_status("busy").wait(2)
        assert bridge.simulator.status_pattern == "busy"


@pytest.mark.slow
def test_soak_many_presses_with_faults_and_unplugs():
    """Longer run: 200 presses at about five a second through a faulty cable, five unplugs."""
    sim = Simulator(
        to_host=Faults(drop=0.01, corrupt=0.01, split=0.3, merge=0.3),
        to_controller=Faults(drop=0.01, corrupt=0.01, split=1.0),
        seed=99,
        controller_options=CONTROLLER_TIMING,
    ).start()
    bridge = SerialBridge(host_settings(sim.port_path))
    try:
        events = []
        for round_ in range(5):
            for _ in range(40):
                sim.press(hold_s=0.06, gap_s=0.1)
            events += collect(bridge, 80 * (round_ + 1) - len(events), timeout=30)
            sim.unplug()
            time.sleep(0.3)
            sim.replug()
        assert_presses_exactly_once(events, 200)
        assert_no_more_events(bridge)
        assert not bridge.errors  # no EVENT_OVERFLOW: the link kept up
    finally:
        bridge.close()
        sim.close()
