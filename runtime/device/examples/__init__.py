"""The shipped device configs, installed with the package: `smearscope config example NAME` prints
one, `smearscope config example NAME > device.yaml` starts a deployment from it.

- ``default``: every key with its default (synthetic camera, Enter to capture, results to files);
- ``pi``: Raspberry Pi camera through libcamera/GStreamer, GPIO button and LED, MQTT with TLS;
- ``jetson``: CSI camera through nvarguscamerasrc, controller on USB, TensorRT, MQTT with TLS.
"""

from __future__ import annotations

from pathlib import Path

from runtime.contracts.errors import ConfigError

EXAMPLES_DIR = Path(__file__).resolve().parent
EXAMPLE_NAMES = ("default", "pi", "jetson")


def example_path(name: str) -> Path:
    """The installed file of a shipped example; ConfigError naming the choices for an unknown one."""
    if name not in EXAMPLE_NAMES:
        raise ConfigError(f"no example {name!r}; one of {', '.join(EXAMPLE_NAMES)}")
    return EXAMPLES_DIR / f"{name}.yaml"
