"""`smearscope bridge`: the microscope controller from the command line (bench tests, demos)."""

from __future__ import annotations

import sys
import time

import click

USB_ID_HELP = "USB id VID:PID in hex to search for when --port is not given (default: the Pico's 2e8a:0005)."


def _serial_config(port: str | None, usb_id: str | None, **extra) -> dict:
    config: dict = {"type": "serial", **extra}
    if port:
        config["port"] = port
    if usb_id:
        try:
            vid, pid = (int(part, 16) for part in usb_id.split(":"))
        except ValueError as exc:
            raise click.BadParameter(f"expected VID:PID in hex such as 2e8a:0005; got {usb_id!r}", param_hint="--usb-id") from exc
        config.update(vid=vid, pid=pid)
    return config


def _open(config: dict):
    from firmware_bridge import BridgeConfigError, BridgeError, open_bridge
    from smearscope.cli.entry import DATA_EXIT, USAGE_EXIT, UserError

    try:
        return open_bridge(config)
    except BridgeError as exc:  # a bad setting is usage (2); an absent or silent controller is not (1)
        raise UserError(str(exc), USAGE_EXIT if isinstance(exc, BridgeConfigError) else DATA_EXIT) from None


@click.group()
def bridge() -> None:
    """The microscope controller: CAPTURE button, status LED, illumination.

    Talks the framed serial protocol (firmware_bridge/PROTOCOL.md) to the controller board,
    or runs a simulated board on a pseudo-terminal for testing without hardware.
    """


@bridge.command()
def ports() -> None:
    """List serial ports with their USB ids (the Pico is 2e8a:0005)."""
    from serial.tools import list_ports

    found = sorted(list_ports.comports(), key=lambda p: p.device)
    if not found:
        click.echo("no serial ports found")
    for port in found:
        usb = f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None else "—"
        click.echo(f"{port.device:<20} {usb:<10} {port.description}")


@bridge.command()
@click.option("--drop", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Chance each byte is lost.")
@click.option("--corrupt", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Chance each byte is damaged.")
@click.option("--split", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Chance a write is sent in pieces.")
@click.option("--merge", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Chance a write is held and merged.")
@click.option("--seed", type=int, default=None, help="Random seed for boot ids and faults.")
@click.option("--press-every", type=click.FloatRange(min=0.1), default=None, help="Press the button every N seconds.")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after N seconds (default: until 'q' or Ctrl-C).")
def simulate(drop, corrupt, split, merge, seed, press_every, duration) -> None:
    """Run a simulated controller board on a pseudo-terminal and print its port path.

    Connect the device to the printed path (`smearscope bridge monitor --port PATH`, or
    `port:` in a serial bridge config). Type a letter and Enter: p press, u unplug,
    r replug, b reboot, q quit. Status-LED and illumination changes are printed.
    """
    import select

    from firmware_bridge.simulator import Faults, Simulator

    faults = Faults(drop=drop, corrupt=corrupt, split=split, merge=merge)
    with Simulator(to_host=faults, to_controller=Faults(drop=drop, corrupt=corrupt), seed=seed) as sim:
        click.echo(sim.port_path)
        sys.stdout.flush()
        click.echo("commands: p press · u unplug · r replug · b reboot · q quit", err=True)
        start = time.monotonic()
        next_press = start + press_every if press_every else None
        shown = None
        interactive = sys.stdin is not None and not sys.stdin.closed
        while duration is None or time.monotonic() - start < duration:
            state = (sim.status_pattern, sim.illumination, sim.plugged)
            if state != shown:
                shown = state
                click.echo(f"status LED {state[0]:<8} illumination {state[1]:>3}  {'plugged' if state[2] else 'unplugged'}", err=True)
            if next_press is not None and time.monotonic() >= next_press:
                sim.press()
                next_press += press_every
                click.echo("press", err=True)
            line = ""
            if interactive:
                try:
                    ready, _, _ = select.select([sys.stdin], [], [], 0.05)
                except (OSError, ValueError):
                    interactive, ready = False, []
                if ready:
                    line = sys.stdin.readline()
                    if line == "":
                        interactive = False  # stdin closed: keep running on the timers
                    line = line.strip().lower()
            else:
                time.sleep(0.05)
            if line == "q":
                break
            action = {"p": sim.press, "u": sim.unplug, "r": sim.replug, "b": sim.reboot}.get(line)
            if action is not None:
                action()
            elif line:
                click.echo(f"unknown command {line!r}: p, u, r, b or q", err=True)


@bridge.command()
@click.option("--port", default=None, help="Serial port path (default: search by USB id).")
@click.option("--usb-id", default=None, help=USB_ID_HELP)
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after N seconds (default: Ctrl-C).")
def monitor(port, usb_id, duration) -> None:
    """Print connection changes, button events and controller error reports as they happen."""
    with _open(_serial_config(port, usb_id)) as link:
        start = time.monotonic()
        was_connected = None
        reported_errors = 0
        while duration is None or time.monotonic() - start < duration:
            event = link.poll_button(0.1)
            if link.connected != was_connected:
                was_connected = link.connected
                if was_connected:
                    info = link.info
                    version = ".".join(map(str, info.firmware_version))
                    click.echo(f"connected: firmware {version}, protocol {info.protocol_version}, boot {info.boot_id:08x}")
                else:
                    click.echo(f"not connected{': ' + link.last_problem if link.last_problem else ''}")
            errors = list(link.errors)
            for report in errors[reported_errors:]:
                click.echo(f"controller error: {report.name} (detail {report.detail})")
            reported_errors = len(errors)
            if event is not None:
                click.echo(f"{event.action:<7} button {event.button}  event {event.seq}")


@bridge.command()
@click.option("--port", default=None, help="Serial port path (default: search by USB id).")
@click.option("--usb-id", default=None, help=USB_ID_HELP)
@click.option("--status", type=click.Choice(["idle", "busy", "error", "offline"]), default=None, help="Status LED pattern.")
@click.option("--illumination", type=click.IntRange(0, 255), default=None, help="Illumination level 0..255.")
@click.option("--connect-timeout", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Seconds to wait for the handshake.")
@click.option("--hold", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Stay connected N seconds to watch the LEDs.")
def led(port, usb_id, status, illumination, connect_timeout, hold) -> None:
    """Set the status LED and/or the illumination, and report whether the board acknowledged.

    Exits with status 1 if the board refused a command or did not acknowledge it after the
    retry limit. On exit the host says goodbye and the board shows 'offline' again.
    """
    if status is None and illumination is None:
        raise click.UsageError("give --status and/or --illumination")
    with _open(_serial_config(port, usb_id)) as link:
        if not link.wait_connected(connect_timeout):
            raise click.ClickException(f"controller not connected after {connect_timeout:g} s: {link.last_problem or 'no answer'}")
        commands = []
        if status is not None:
            commands.append(link.set_status(status))
        if illumination is not None:
            commands.append(link.set_illumination(illumination))
        failed = False
        for command, asked in zip(commands, [v for v in (status, illumination) if v is not None]):
            command.wait(10)
            click.echo(f"{command.kind} {asked}: {command.outcome} after {command.attempts} attempt(s) {command.reason}".rstrip())
            failed |= not command.ok
        time.sleep(hold)
    if failed:
        sys.exit(1)


@bridge.command()
@click.option("--write", is_flag=True, help="Rewrite the examples section of firmware_bridge/PROTOCOL.md in place.")
def examples(write) -> None:
    """Print the byte-level protocol examples (generated from the codec)."""
    from pathlib import Path

    import firmware_bridge
    from firmware_bridge.protocol_doc import BEGIN_MARK, END_MARK, render

    text = render()
    if not write:
        click.echo(text)
        return
    path = Path(firmware_bridge.__file__).with_name("PROTOCOL.md")
    document = path.read_text(encoding="utf-8")
    start, end = document.index(BEGIN_MARK), document.index(END_MARK) + len(END_MARK)
    path.write_text(document[:start] + text + document[end:], encoding="utf-8")
    click.echo(f"updated {path}")
