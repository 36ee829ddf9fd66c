"""Builds a running device from a validated DeviceConfig: camera, model, publisher, trigger, status.

Kept apart from the loop so tests and the demo can assemble a device from parts (a simulated
button, an in-process publisher) while `smearscope run` assembles everything from one file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from runtime.capture.cameras import make_camera
from runtime.contracts.config import DeviceConfig
from runtime.diagnosis.decision import GuidelineDiagnoser
from runtime.device.loop import Device, DeviceParts, DeviceSettings, ModelHolder
from runtime.delivery.sinks import Publisher, make_publisher
from runtime.contracts.sample import SampleTracker
from runtime.contracts.errors import ModelError
from runtime.contracts.modelcard import load_card
from runtime.contracts.plausible import check_calibration
from runtime.inference.model import default_model_path, session_options
from runtime.capture.triggers import LogStatus, StatusIndicator, TriggerEvent, TriggerQueue, TriggerSource, make_trigger

log = logging.getLogger(__name__)

OPEN_ENDED_FIELDS = 1_000_000  # an order without a field count lasts until the next order


@dataclass
class DeviceSetup:
    """A device and the trigger that drives it; `start()` then `device.run()`, then `stop()`."""

    device: Device
    trigger: TriggerSource
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self.trigger.start(self.device.events)

    def stop(self) -> None:
        self.trigger.stop()
        self.device.close()


def order_to_event(order: dict[str, Any]) -> TriggerEvent:
    """A server order (order/1) -> a sample-change event for the device loop."""
    sample = dict(order.get("sample") or {})
    sample["fields"] = order.get("fields") or OPEN_ENDED_FIELDS
    return TriggerEvent("sample", "server", payload=sample)


def build_device(
    config: DeviceConfig,
    *,
    samples: SampleTracker | None = None,
    publisher: Publisher | None = None,
    trigger: TriggerSource | None = None,
    indicators: list[StatusIndicator] | None = None,
) -> DeviceSetup:
    """Everything the config describes; any part given as an argument replaces the configured one."""
    if config.um_per_px is not None:
        check_device_calibration(config)
    camera = make_camera(config.camera)
    events = TriggerQueue()
    if publisher is None:
        publisher = _configured_publisher(config, events)
    status: list[StatusIndicator] = [LogStatus(), *(indicators or [])]
    if trigger is None:
        trigger, trigger_status = make_trigger(config.trigger)
        status.extend(trigger_status)
    parts = DeviceParts(
        camera=camera,
        model=ModelHolder(config.model.path, session_options(config.model), config.model.flip_average),
        publisher=publisher,
        samples=samples or SampleTracker.from_config(config.sample),
        diagnoser=GuidelineDiagnoser.from_config(config.diagnosis),
        indicators=status,
        events=events,
    )
    settings = DeviceSettings(quality=config.quality, um_per_px=config.um_per_px,
                              overlays_dir=config.output.overlays_dir, first_seq=_next_seq(publisher))
    device = Device(config.device_id, parts, settings)
    return DeviceSetup(device=device, trigger=trigger)


def check_device_calibration(config: DeviceConfig) -> None:
    """The configured calibration against the plausible range and the model card's scale range,
    before the device waits for its first capture. A model that cannot be read is left to the
    device, which reports it on its status LED and retries."""
    try:
        preprocess = load_card(config.model.path or default_model_path()).preprocess
    except ModelError:
        preprocess = None
    check_calibration(config.um_per_px, preprocess)


def _next_seq(publisher: Publisher) -> int:
    """Continue the sequence after a restart when the publisher remembers it (the MQTT outbox does)."""
    outbox = getattr(publisher, "outbox", None)
    last_seq = getattr(outbox, "last_seq", None)
    return last_seq() + 1 if callable(last_seq) else 0


def _configured_publisher(config: DeviceConfig, events: TriggerQueue) -> Publisher:
    """The configured publisher; MQTT orders from the server become sample changes on the device."""
    return make_publisher(config.publisher, config.device_id, on_order=lambda order: events.put(order_to_event(order)))
