"""Host side of the microscope controller: the CAPTURE button, the status LED, the illumination.

Public API for the device runtime (everything else is internal)::

    from firmware_bridge import open_bridge

    bridge = open_bridge({"type": "serial"})          # or "gpio", or "simulator"
    event = bridge.poll_button(timeout=0.1)           # ButtonEvent | None
    if event is not None and event.is_press:
        bridge.set_status("busy")                     # 'idle' | 'busy' | 'error' | 'offline'
        ...
        bridge.set_status("idle")
    bridge.set_illumination(200)                      # 0..255
    bridge.connected                                  # False while the controller is unreachable
    bridge.close()                                    # shows 'offline', stops threads

- ``poll_button(timeout)`` returns each debounced press and release exactly once (event numbers
  are deduplicated across retransmissions and reconnects), in order, or None after timeout.
  Act on ``event.is_press``; ``event.seq`` and ``event.boot_id`` identify the event.
- ``set_status`` / ``set_illumination`` never block; they return a ``Command`` whose
  ``wait(timeout)`` says whether the controller acknowledged it (``outcome``: acked, nacked,
  failed after the retry limit, disconnected, unsupported, closed). The latest status and
  illumination are re-sent whenever the controller reconnects; while no host is present the
  controller shows the 'offline' pattern by itself.
- ``open_bridge(config)`` validates the config (unknown keys and bad values raise
  ``BridgeConfigError`` naming the key). Types and keys: see ``api.SerialSettings``,
  ``api.GpioSettings``, ``api.SimulatorSettings``. A "simulator" bridge also has
  ``.simulator`` (``press()``, ``unplug()``, ``replug()``...) for demos and tests.
- Errors: ``BridgeError`` (base), ``BridgeConfigError``, ``BridgeUnavailableError`` (for
  example ``gpiod`` not installed). The bridge itself never raises from its worker thread:
  a lost link shows as ``connected == False`` and is retried.

This package imports nothing else of the project. wire.py, debounce.py and controller.py also
run on the controller board (MicroPython); see firmware/README.md and PROTOCOL.md.
"""

from firmware_bridge.api import (
    STATUS_STATES,
    Bridge,
    BridgeConfigError,
    BridgeError,
    BridgeUnavailableError,
    ButtonEvent,
    Command,
    ControllerErrorReport,
    ControllerInfo,
    GpioSettings,
    SerialSettings,
    SimulatorSettings,
    open_bridge,
)

__all__ = [
    "STATUS_STATES",
    "Bridge",
    "BridgeConfigError",
    "BridgeError",
    "BridgeUnavailableError",
    "ButtonEvent",
    "Command",
    "ControllerErrorReport",
    "ControllerInfo",
    "GpioSettings",
    "SerialSettings",
    "SimulatorSettings",
    "open_bridge",
]
