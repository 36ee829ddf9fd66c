"""The reference firmware as it would sit on the Pico: flat files, MicroPython-only modules.

The files the README tells you to copy are copied into a bare folder and imported from there,
with the `firmware_bridge` package hidden (as on the board) and small stand-ins for the
`machine` and `micropython` modules and MicroPython's time functions. Then main.run() is
driven millisecond by millisecond against a scripted host.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
import time
import types

import pytest

from firmware_bridge import wire as host_wire

SHARED_SOURCES = ["wire.py", "debounce.py", "controller.py", "firmware/main.py"]
MICROPYTHON_MODULES = {"json", "os", "sys", "time", "select", "machine", "micropython", "wire", "debounce", "controller", "firmware_bridge"}


def copied_files(repo_root) -> list[tuple[str, str]]:
    """(source, name on the board) for every file the README's mpremote lines copy."""
    readme = (repo_root / "firmware_bridge" / "firmware" / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"mpremote cp ((?:[^\n\\]|\\\n)+)", readme)
    pairs = []
    for command in commands:
        words = command.replace("\\\n", " ").split()
        target = words[-1]
        for source in words[:-1]:
            name = target[1:] if target != ":" else source.rsplit("/", 1)[-1]
            pairs.append((source, name))
    return pairs


class FakePin:
    IN, OUT, PULL_UP = "in", "out", "pull_up"
    levels: dict = {}
    history: dict = {}

    def __init__(self, ident, mode=None, pull=None):
        self.ident = ident
        FakePin.levels.setdefault(ident, 1 if pull == FakePin.PULL_UP else 0)

    def value(self, level=None):
        if level is None:
            return FakePin.levels[self.ident]
        FakePin.levels[self.ident] = level
        FakePin.history.setdefault(self.ident, []).append(level)


class FakePWM:
    duty = None

    def __init__(self, pin):
        self.pin = pin

    def freq(self, hz):
        self.hz = hz

    def duty_u16(self, value):
        FakePWM.duty = value


class ScriptedLink:
    """The host's end of the USB link: bytes to deliver, frames received."""

    def __init__(self):
        self.to_board = bytearray()
        self.decoder = host_wire.FrameDecoder()
        self.frames = []

    def send(self, msg_type, seq, payload=b""):
        self.to_board += host_wire.encode_frame(msg_type, seq, payload)

    def read(self):
        data, self.to_board = bytes(self.to_board[:16]), self.to_board[16:]  # arrives in pieces
        return data

    def write(self, data):
        self.frames += self.decoder.feed(data)

    def take(self, msg_type):
        found = [f for f in self.frames if f.msg_type == msg_type]
        self.frames = [f for f in self.frames if f.msg_type != msg_type]
        return found


@pytest.fixture()
def board_modules(repo_root, tmp_path, monkeypatch):
    """Import main.py from a flat folder holding exactly the files the README copies."""
    for source, name in copied_files(repo_root):
        shutil.copy(repo_root / source, tmp_path / name)
    clock = {"ms": 0}
    machine = types.SimpleNamespace(
        Pin=FakePin, PWM=FakePWM, WDT_RESET=3, reset_cause=lambda: 1, WDT=lambda timeout: None
    )
    FakePin.levels, FakePin.history, FakePWM.duty = {}, {}, None
    monkeypatch.setitem(sys.modules, "machine", machine)
    monkeypatch.setitem(sys.modules, "micropython", types.SimpleNamespace(kbd_intr=lambda c: None))
    monkeypatch.setitem(sys.modules, "firmware_bridge", None)  # not on the board
    for name in ("wire", "debounce", "controller", "main"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(time, "ticks_ms", lambda: clock["ms"], raising=False)
    monkeypatch.setattr(time, "ticks_diff", lambda a, b: a - b, raising=False)
    monkeypatch.setattr(time, "sleep_ms", lambda ms: clock.__setitem__("ms", clock["ms"] + ms), raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    import main

    yield main
    for name in ("wire", "debounce", "controller", "main"):
        sys.modules.pop(name, None)


def test_readme_copies_every_module_the_firmware_imports(repo_root):
    names = {name for _, name in copied_files(repo_root)}
    assert names == {"protocol_constants.json", "wire.py", "debounce.py", "controller.py", "main.py"}


@pytest.mark.parametrize("source", SHARED_SOURCES)
def test_board_sources_stay_within_micropython(repo_root, source):
    """No CPython-only modules or syntax in files that run on the board."""
    tree = ast.parse((repo_root / "firmware_bridge" / source).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert {a.name.split(".")[0] for a in node.names} <= MICROPYTHON_MODULES, ast.dump(node)
        if isinstance(node, ast.ImportFrom):
            assert node.module.split(".")[0] in MICROPYTHON_MODULES and node.module != "__future__"
        assert not isinstance(node, (ast.AnnAssign, ast.JoinedStr, ast.NamedExpr, ast.Match)), ast.dump(node)


def test_firmware_uses_the_flat_modules_not_the_host_package(board_modules):
    assert board_modules.wire.__name__ == "wire"
    assert sys.modules["controller"].wire is board_modules.wire


@pytest.mark.parametrize(
    "payload", [b"", b"\x00", b"123456789", bytes(range(32)), b"\xff" * 32, b"\x00\x11\x00"]
)
def test_board_codec_agrees_with_the_host_on_vectors(board_modules, payload):
    board_wire = board_modules.wire
    assert board_wire.crc16(payload) == host_wire.crc16(payload)
    assert board_wire.cobs_encode(payload) == host_wire.cobs_encode(payload)
    assert board_wire.encode_frame(0x10, 0x42, payload) == host_wire.encode_frame(0x10, 0x42, payload)
    assert board_wire.CONSTANTS == host_wire.CONSTANTS


def test_firmware_main_loop_speaks_the_protocol(board_modules):
    main = board_modules
    link = ScriptedLink()
    controller = main.Controller(boot_id=0xBEEF)
    board = main.Board(link)
    clock = main.MonotonicMs()

    link.send(host_wire.HELLO, 1, host_wire.hello_payload())
    main.run(board, controller, clock, iterations=20)
    (version,) = link.take(host_wire.VERSION)
    assert version.payload[0] == 1 and host_wire.read_u32(version.payload, 5) == 0xBEEF

    FakePin.levels[main.BUTTON_PIN] = 0  # pressed (to ground)
    main.run(board, controller, clock, iterations=60)
    FakePin.levels[main.BUTTON_PIN] = 1
    main.run(board, controller, clock, iterations=5)
    (press,) = link.take(host_wire.BUTTON)
    assert press.payload == host_wire.button_payload(1, 0, host_wire.BUTTON_ACTIONS["press"])
    link.send(host_wire.ACK, 0, host_wire.ack_payload(press.seq))
    main.run(board, controller, clock, iterations=60)
    (release,) = link.take(host_wire.BUTTON)
    assert host_wire.read_u16(release.payload, 0) == 2

    link.send(host_wire.ACK, 0, host_wire.ack_payload(release.seq))
    link.send(host_wire.SET_STATUS, 7, bytes([host_wire.STATUS_PATTERNS["busy"]]))
    link.send(host_wire.SET_ILLUMINATION, 8, b"\xc8")
    FakePin.history.clear()
    for _ in range(10):  # keep the host "present" with heartbeats while the LED blinks
        link.send(host_wire.HEARTBEAT, 0, b"")
        main.run(board, controller, clock, iterations=100)
    assert sorted(f.payload for f in link.take(host_wire.ACK)) == [b"\x07", b"\x08"]
    assert FakePWM.duty == 200 * 257
    led = FakePin.history[main.STATUS_LED_PIN]
    assert 0.4 < sum(led) / len(led) < 0.6  # busy blinks 125 ms on / 125 ms off


def test_firmware_does_not_start_when_capture_is_held_at_boot(board_modules, capsys):
    FakePin.levels[board_modules.BUTTON_PIN] = 0
    board_modules.main()  # returns instead of looping forever
    assert "REPL" in capsys.readouterr().out
