"""A private Mosquitto on a free loopback port, for the demo and the tests.

smearscope never implements a broker: the demo, the tests and deployments all use Mosquitto.
This module only starts one (the `mosquitto` binary, as a child process) with a configuration
written into a private folder, waits until it listens, and stops it. Deployments run Mosquitto
as a system service with deploy/mosquitto.conf instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from runtime.contracts.errors import SmearscopeError

INSTALL_HINT = "install Mosquitto (Debian/Ubuntu: sudo apt-get install mosquitto; macOS: brew install mosquitto)"

LOOPBACK_CONFIG = """\
# A private broker for one machine: plain MQTT on loopback only, persistence in its own folder.
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {data}/
autosave_interval 1
max_packet_size 1048576
max_queued_messages 100000
"""


class MosquittoUnavailable(SmearscopeError):
    """No mosquitto binary on this machine, or it would not start."""


def find_mosquitto() -> Path | None:
    """The mosquitto binary: on PATH, or where Debian puts it (/usr/sbin is not on a user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for candidate in (Path("/usr/sbin/mosquitto"), Path("/usr/local/sbin/mosquitto")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A TCP port nobody listens on at this moment on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalMosquitto:
    """One Mosquitto process on 127.0.0.1:`port`, configured from `config` (default: LOOPBACK_CONFIG).

    `config` may use `{port}` and `{data}` (the persistence folder inside `workdir`). As root,
    Mosquitto would drop to the `mosquitto` user and then could not read a private folder, so
    the rendered file starts with `user root` there.
    """

    def __init__(self, workdir: str | Path, config: str = LOOPBACK_CONFIG, port: int | None = None) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise MosquittoUnavailable(f"mosquitto not found: {INSTALL_HINT}")
        self.binary = binary
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.data = self.workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        text = config.format(port=self.port, data=self.data)
        if os.geteuid() == 0:
            text = "user root\n" + text
        text += f"\nlog_dest file {self.workdir / 'mosquitto.log'}\n"
        self.config_path = self.workdir / "mosquitto.conf"
        self.config_path.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 10.0) -> "LocalMosquitto":
        """Start the process and wait until the port accepts connections."""
        self.proc = subprocess.Popen([str(self.binary), "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while not self._listening():
            if time.monotonic() > deadline:
                self.stop()
                raise MosquittoUnavailable(f"mosquitto did not listen on port {self.port} within {timeout_s:g} s")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise MosquittoUnavailable(f"mosquitto exited with {self.proc.returncode}: {self.log()[-500:].strip()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final persistence save (what a power cut does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 5 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> "LocalMosquitto":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
