"""GPIO bridge logic (no Raspberry Pi here: the lines are an in-memory stand-in) and config checks.

What runs on a real Pi and is not covered here: GpiodLines itself (libgpiod's request_lines,
get_value, set_value). Everything above it — sampling, debouncing, event numbering, LED
patterns, the Bridge interface — is the same code either way.
"""

from __future__ import annotations

import importlib.util

import pytest

from firmware_bridge import (
    Bridge,
    BridgeConfigError,
    BridgeUnavailableError,
    GpioSettings,
    open_bridge,
)
from firmware_bridge.api import ACKED, UNSUPPORTED, parse_settings
from firmware_bridge.gpio_bridge import GpioBridge


class MemoryLines:
    """Stand-in for GpiodLines: a button level the test sets, LED levels it records."""

    def __init__(self):
        self.pressed = False
        self.led: list[bool] = []
        self.lamp: list[bool] = []
        self.closed = False

    def button_pressed(self) -> bool:
        return self.pressed

    def set_status_led(self, on: bool) -> None:
        self.led.append(on)

    def set_illumination(self, on: bool) -> None:
        self.lamp.append(on)

    def close(self) -> None:
        self.closed = True


def drive(bridge: GpioBridge, lines: MemoryLines, levels: list[tuple[int, bool]]) -> None:
    for now, level in levels:
        lines.pressed = level
        bridge.step(now)


def test_gpio_bridge_debounces_and_numbers_presses():
    lines = MemoryLines()
    bridge = GpioBridge(GpioSettings(debounce=0.02, illumination_line=22), lines=lines, autostart=False)
    assert isinstance(bridge, Bridge)
    bouncy_press = [(0, True), (2, False), (3, True), (5, False), (6, True)] + [(t, True) for t in range(10, 80, 5)]
    bouncy_release = [(80, False), (81, True), (83, False)] + [(t, False) for t in range(85, 150, 5)]
    for offset in (0, 200):
        drive(bridge, lines, [(t + offset, level) for t, level in bouncy_press + bouncy_release])
    events = []
    while (event := bridge.poll_button(0)) is not None:
        events.append(event)
    assert [(e.action, e.seq) for e in events] == [("press", 1), ("release", 2), ("press", 3), ("release", 4)]
    bridge.close()
    assert lines.closed


def test_gpio_bridge_blinks_the_status_led_and_switches_the_lamp():
    lines = MemoryLines()
    bridge = GpioBridge(GpioSettings(illumination_line=22), lines=lines, autostart=False)
    assert bridge.set_status("busy").outcome == ACKED
    assert bridge.set_illumination(10).ok
    for now in range(0, 1000, 5):
        bridge.step(now)
    assert 0.4 < sum(lines.led) / len(lines.led) < 0.6
    assert all(lines.lamp)
    bridge.close()


def test_gpio_bridge_without_lamp_line_says_unsupported():
    bridge = GpioBridge(GpioSettings(illumination_line=None), lines=MemoryLines(), autostart=False)
    command = bridge.set_illumination(100)
    assert command.outcome == UNSUPPORTED and not command.wait(0)
    bridge.close()


@pytest.mark.skipif(importlib.util.find_spec("gpiod") is not None, reason="gpiod is installed here")
def test_gpio_type_without_gpiod_gives_a_clear_error():
    with pytest.raises(BridgeUnavailableError, match=r"smearscope\[pi\]"):
        open_bridge({"type": "gpio"})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "usb"}, "bridge.type must be one of"),
        ({}, "bridge.type must be one of"),
        ({"type": "serial", "prot": "/dev/ttyACM0"}, r"bridge\.prot: unknown key"),
        ({"type": "serial", "ack_timeout": "fast"}, r"bridge\.ack_timeout: expected a number; got 'fast'$"),
        ({"type": "serial", "max_retries": -1}, r"bridge\.max_retries: must be >= 0; got -1$"),
        ({"type": "gpio", "button_active_low": "yes"}, r"bridge\.button_active_low: expected true or false; got 'yes'$"),
        ("serial", "must be a mapping"),
        ({"type": "simulator", "serial": {"ack_timout": 1}}, r"bridge\.serial\.ack_timout: unknown key$"),
        ({"type": "simulator", "serial": 3}, r"bridge\.serial: expected a mapping; got 3$"),
        ({"type": "serial", "ack_timeout": 0}, r"bridge\.ack_timeout: must be > 0; got 0$"),
        ({"type": "gpio", "poll_interval": 0}, r"bridge\.poll_interval: must be > 0; got 0$"),
        ({"type": "simulator", "drop": 2}, r"bridge\.drop: must be <= 1; got 2$"),
    ],
)
def test_bad_config_names_the_key(config, message):
    with pytest.raises(BridgeConfigError, match=message):
        parse_settings(config)


def test_good_config_is_typed():
    kind, settings = parse_settings({"type": "serial", "port": "/dev/ttyACM0", "ack_timeout": 1})
    assert kind == "serial" and settings.port == "/dev/ttyACM0" and settings.ack_timeout == 1.0


def test_bad_status_and_illumination_values_are_refused():
    bridge = GpioBridge(GpioSettings(), lines=MemoryLines(), autostart=False)
    with pytest.raises(BridgeConfigError, match="idle, busy, error, offline"):
        bridge.set_status("blinking")
    with pytest.raises(BridgeConfigError, match="0..255"):
        bridge.set_illumination(256)
    bridge.close()


def test_serial_bridge_reports_a_missing_port_without_crashing(tmp_path):
    with open_bridge({"type": "serial", "port": str(tmp_path / "nothing"), "reconnect_interval": 0.05}) as bridge:
        assert not bridge.wait_connected(0.3)
        assert "nothing" in bridge.last_problem
        assert bridge.set_status("busy").outcome == "disconnected"
        assert bridge.poll_button(0.05) is None
