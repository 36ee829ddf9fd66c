"""`smearscope bridge ...` against the simulated board on a real pseudo-terminal."""

from __future__ import annotations

import threading

import pytest

from firmware_bridge.protocol_doc import render
from firmware_bridge.simulator import Simulator
from smearscope.cli import cli


@pytest.mark.parametrize("command", ["ports", "simulate", "monitor", "led", "examples"])
def test_every_bridge_command_has_help(cli_runner, command):
    result = cli_runner.invoke(cli, ["bridge", command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_examples_prints_the_generated_section(cli_runner):
    result = cli_runner.invoke(cli, ["bridge", "examples"])
    assert result.exit_code == 0
    assert result.output.strip() == render().strip()


def test_led_is_acknowledged_by_the_board(cli_runner):
    with Simulator(seed=5) as sim:
        result = cli_runner.invoke(cli, ["bridge", "led", "--port", sim.port_path, "--status", "busy", "--illumination", "77"])
        assert result.exit_code == 0, result.output
        assert "status busy: acked after 1 attempt(s)" in result.output
        assert "illumination 77: acked" in result.output
        assert sim.illumination == 77


def test_led_needs_something_to_set(cli_runner):
    result = cli_runner.invoke(cli, ["bridge", "led", "--port", "/dev/null"])
    assert result.exit_code == 2
    assert "--status and/or --illumination" in result.output


def test_led_without_a_board_fails_with_one_clear_line(cli_runner, tmp_path):
    missing = str(tmp_path / "ttyACM9")
    result = cli_runner.invoke(cli, ["bridge", "led", "--port", missing, "--status", "idle", "--connect-timeout", "0.3"])
    assert result.exit_code == 1
    assert "controller not connected after 0.3 s" in result.output and "ttyACM9" in result.output


def test_monitor_prints_the_handshake_and_presses(cli_runner):
    with Simulator(seed=6) as sim:
        presser = threading.Timer(0.3, lambda: (sim.press(), sim.press()))
        presser.start()
        result = cli_runner.invoke(cli, ["bridge", "monitor", "--port", sim.port_path, "--duration", "1.5"])
        presser.join()
    assert result.exit_code == 0, result.output
    assert "connected: firmware 1.0.0, protocol 1" in result.output
    lines = [line.split()[0] for line in result.output.splitlines() if line.startswith(("press", "release"))]
    assert lines == ["press", "release", "press", "release"]


def test_simulate_prints_a_pty_path(cli_runner):
    result = cli_runner.invoke(cli, ["bridge", "simulate", "--duration", "0.3", "--seed", "1"], input="")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].endswith("ttySMEAR0")
