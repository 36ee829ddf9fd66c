"""A simulated controller board on a real pseudo-terminal, with fault injection.

The simulator runs the firmware's own protocol engine (controller.Controller) in a thread and
connects it to the master side of a pty; the host opens ``port_path`` (a symlink to the pty's
slave side) exactly as it would open /dev/ttyACM0. Between the two sits a faulty "cable" that
can drop, corrupt, split and merge bytes in either direction.

    with Simulator() as sim:
        bridge = SerialBridge(port=sim.port_path)
        sim.press()            # a bouncing contact, debounced by the controller
        sim.unplug()           # the pty disappears (the host sees the port fail)
        sim.replug()           # a new pty behind the same symlink path

``unplug(power_loss=False)`` models a self-powered board whose USB link drops: its queued
events survive. ``power_loss=True`` or ``reboot()`` restarts the controller with a new boot id.
"""

from __future__ import annotations

import os
import random
import select
import tempfile
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge import wire
from firmware_bridge.api import SimulatorSettings
from firmware_bridge.controller import Controller


@dataclass
class Faults:
    """Per-byte and per-write fault probabilities for one direction of the cable."""

    drop: float = 0.0  # each byte is lost with this probability
    corrupt: float = 0.0  # each byte is XORed with a random non-zero value
    split: float = 0.0  # a write is cut into 1..3-byte pieces sent a little apart
    merge: float = 0.0  # a write is held back and sent together with the next ones

    def damage(self, data: bytes, rng: random.Random) -> bytes:
        if not (self.drop or self.corrupt):
            return data
        out = bytearray()
        for byte in data:
            if rng.random() < self.drop:
                continue
            if rng.random() < self.corrupt:
                byte ^= rng.randrange(1, 256)
            out.append(byte)
        return bytes(out)


@dataclass
class SimulatorStats:
    presses: int = 0
    plugs: int = 0
    bytes_to_host: int = 0
    bytes_from_host: int = 0
    split_writes: int = 0  # writes sent in pieces
    merged_writes: int = 0  # writes held back and sent with later ones


class Simulator:
    """A controller board behind a pseudo-terminal; see the module docstring."""

    def __init__(
        self,
        to_host: Faults | None = None,
        to_controller: Faults | None = None,
        seed: int | None = None,
        controller_options: dict[str, int] | None = None,
        link_dir: str | os.PathLike | None = None,
    ) -> None:
        """`controller_options`: the simulated board's timings (controller.CONTROLLER_OPTIONS), e.g.
        {"heartbeat_ms": 50}; the protocol's own values otherwise."""
        self.to_host = to_host or Faults()
        self.to_controller = to_controller or Faults()
        self.rng = random.Random(seed)
        self._controller_options = dict(controller_options or {})
        self.controller = self._new_controller()
        self.stats = SimulatorStats()
        self._own_dir = link_dir is None
        self._dir = Path(link_dir) if link_dir else Path(tempfile.mkdtemp(prefix="smearscope-sim-"))
        self.port_path = str(self._dir / "ttySMEAR0")
        self._lock = threading.RLock()
        self._master: int | None = None
        self._slave: int | None = None
        self._contact: deque[tuple[float, bool]] = deque()  # scheduled raw contact levels
        self._contact_level = False
        self._held: list[tuple[float, bytes]] = []  # merged writes waiting to go out
        self._frozen_until = 0.0
        self._stop = threading.Event()
        self._epoch = time.monotonic()
        self._thread: threading.Thread | None = None

    # ----- lifecycle ------------------------------------------------------------------------

    def start(self) -> Simulator:
        self._plug()
        self._thread = threading.Thread(target=self._run, name="controller-simulator", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._unplug()
        if self._own_dir:
            try:
                self._dir.rmdir()
            except OSError:
                pass

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- what a person at the bench does ---------------------------------------------------

    def press(self, hold_s: float = 0.06, bounces: int = 3, gap_s: float = 0.03) -> None:
        """Press and release the button, with contact bounce; queued after earlier presses."""
        with self._lock:
            start = max(self._now(), self._contact[-1][0] + gap_s if self._contact else 0.0)
            t = start
            for i in range(bounces):  # closing bounce: short closed/open flickers
                self._contact.append((t, True))
                self._contact.append((t + 0.001, False))
                t += 0.002
            self._contact.append((t, True))
            t += hold_s
            for i in range(bounces):  # opening bounce
                self._contact.append((t, False))
                self._contact.append((t + 0.001, True))
                t += 0.002
            self._contact.append((t, False))
            self.stats.presses += 1

    def unplug(self, power_loss: bool = False) -> None:
        """Pull the USB cable: the pty and the symlink vanish. power_loss also restarts the board."""
        with self._lock:
            self._unplug()
            if power_loss:
                self.controller = self._new_controller()

    def replug(self) -> None:
        """Plug the cable back in: a new pty behind the same port_path."""
        with self._lock:
            self._plug()

    def reboot(self) -> None:
        """Restart the controller (new boot id, empty event queue) without touching the cable."""
        with self._lock:
            self.controller = self._new_controller()

    def freeze(self, seconds: float) -> None:
        """The board hangs: it neither reads nor sends for a while (heartbeat loss)."""
        with self._lock:
            self._frozen_until = self._now() + seconds

    def wait_idle(self, timeout: float) -> bool:
        """Wait until all scheduled presses happened and the controller's queue is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._contact and self.controller.pending_events() == 0:
                    return True
            time.sleep(0.01)
        return False

    @property
    def status_pattern(self) -> str:
        """The pattern the status LED shows now (offline while no host is present)."""
        number = self.controller.effective_pattern()
        return next(name for name, value in wire.STATUS_PATTERNS.items() if value == number)

    @property
    def illumination(self) -> int:
        return self.controller.illumination

    @property
    def plugged(self) -> bool:
        return self._master is not None

    # ----- internals ------------------------------------------------------------------------

    def _new_controller(self) -> Controller:
        return Controller(boot_id=self.rng.getrandbits(32), options=self._controller_options)

    def _now(self) -> float:
        return time.monotonic() - self._epoch

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no newline translation before the host configures it
        os.set_blocking(master, False)
        link = self.port_path + ".new"
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.ttyname(slave), link)
        os.replace(link, self.port_path)
        self._master, self._slave = master, slave
        self._held.clear()
        self.stats.plugs += 1

    def _unplug(self) -> None:
        if os.path.lexists(self.port_path):
            os.unlink(self.port_path)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        self._held.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            master = self._master
            readable = []
            if master is not None:
                try:
                    readable, _, _ = select.select([master], [], [], 0.002)
                except (OSError, ValueError):
                    readable = []
            else:
                time.sleep(0.002)
            with self._lock:
                self._tick(readable)

    def _tick(self, readable: list[int]) -> None:
        now = self._now()
        now_ms = int(now * 1000)
        controller = self.controller
        # Replay every scheduled contact change at its own time, so a late tick (a busy CPU)
        # never swallows a press: the debouncer sees the waveform as the button made it.
        while self._contact and self._contact[0][0] <= now:
            at, level = self._contact.popleft()
            controller.sample_button(self._contact_level, int(at * 1000))
            self._contact_level = level
            controller.sample_button(level, int(at * 1000))
        controller.sample_button(self._contact_level, now_ms)
        if now < self._frozen_until:
            return
        if readable and self._master is not None and self._master in readable:
            try:
                data = os.read(self._master, 4096)
            except OSError:
                data = b""
            if data:
                self.stats.bytes_from_host += len(data)
                damaged = self.to_controller.damage(data, self.rng)
                position = 0
                while position < len(damaged):  # arbitrary chunking exercises partial frames
                    step = self.rng.randint(1, 8) if self.to_controller.split else len(damaged)
                    controller.feed(damaged[position : position + step], now_ms)
                    position += step
        out = controller.poll(now_ms)
        if out:
            self._transmit(self.to_host.damage(out, self.rng), now)
        self._flush_held(now)

    def _transmit(self, data: bytes, now: float) -> None:
        if self.to_host.merge and self.rng.random() < self.to_host.merge:
            self._held.append((now + self.rng.uniform(0.005, 0.03), data))
            self.stats.merged_writes += 1
            return
        if self._held:  # keep byte order: anything held goes out first
            self._held.append((now, data))
            return
        self._write(data)

    def _flush_held(self, now: float) -> None:
        if self._held and self._held[0][0] <= now:
            merged = b"".join(chunk for _, chunk in self._held)
            self._held.clear()
            self._write(merged)

    def _write(self, data: bytes) -> None:
        if self._master is None or not data:
            return
        pieces = [data]
        if self.to_host.split and self.rng.random() < self.to_host.split:
            pieces, position = [], 0
            self.stats.split_writes += 1
            while position < len(data):
                step = self.rng.randint(1, 3)
                pieces.append(data[position : position + step])
                position += step
        for index, piece in enumerate(pieces):
            if index:
                time.sleep(0.0005)
            try:
                os.write(self._master, piece)
                self.stats.bytes_to_host += len(piece)
            except BlockingIOError:
                return  # nobody reading and the pty buffer is full: bytes are lost, as on USB
            except OSError:
                return


class SimulatedBridge:
    """A SerialBridge attached to its own Simulator; closing it closes both (type "simulator")."""

    def __init__(self, simulator: Simulator, bridge) -> None:
        self.simulator = simulator
        self.bridge = bridge

    def poll_button(self, timeout: float = 0.0):
        return self.bridge.poll_button(timeout)

    def set_status(self, state: str):
        return self.bridge.set_status(state)

    def set_illumination(self, level: int):
        return self.bridge.set_illumination(level)

    @property
    def connected(self) -> bool:
        return self.bridge.connected

    def wait_connected(self, timeout: float) -> bool:
        return self.bridge.wait_connected(timeout)

    def close(self) -> None:
        self.bridge.close()
        self.simulator.close()

    def __enter__(self) -> SimulatedBridge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_simulated_bridge(settings: SimulatorSettings | None = None) -> SimulatedBridge:
    """Start a simulator (faults from settings) and a serial bridge connected to it."""
    from firmware_bridge.serial_bridge import SerialBridge

    settings = settings or SimulatorSettings()
    faults = Faults(drop=settings.drop, corrupt=settings.corrupt, split=settings.split, merge=settings.merge)
    simulator = Simulator(to_host=faults, to_controller=Faults(drop=settings.drop, corrupt=settings.corrupt), seed=settings.seed)
    simulator.start()
    bridge = SerialBridge(settings.serial.model_copy(update={"port": simulator.port_path}))
    return SimulatedBridge(simulator, bridge)
