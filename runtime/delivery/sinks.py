"""Where results go: the Publisher interface, and the file and stdout sinks.

The device loop hands every validated result/1 message to a Publisher. Durable delivery to the
central server (SQLite outbox, MQTT, receipts) implements the same interface in runtime.mqtt;
the sinks here are for a device without a network, for tests and for the demo's saved results.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, TextIO, runtime_checkable

from runtime.contracts.config import FilePublisherConfig, MqttPublisherConfig, PublisherConfig, StdoutPublisherConfig
from runtime.contracts.errors import ConfigError


@runtime_checkable
class Publisher(Protocol):
    """Accepts result/1 messages. `publish` returns once the message is safe on this device
    (written to a file, to the outbox); delivery beyond that is the publisher's own business."""

    def publish(self, message: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """One pretty-printed JSON file per result, `<dir>/<result_id>.json`, written atomically."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"publisher.dir: cannot create {self.directory} ({exc.strerror})") from exc

    def path_for(self, message: Mapping[str, Any]) -> Path:
        return self.directory / f"{message['result_id']}.json"

    def publish(self, message: Mapping[str, Any]) -> None:
        path = self.path_for(message)
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(message, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def close(self) -> None:
        pass


class StdoutSink:
    """One compact JSON line per result (pipe it into jq or a log collector)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def publish(self, message: Mapping[str, Any]) -> None:
        stream = self.stream or sys.stdout
        stream.write(json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n")
        stream.flush()

    def close(self) -> None:
        pass


class FanOut:
    """Publishes to several publishers in order (e.g. the MQTT outbox and a local file copy)."""

    def __init__(self, *publishers: Publisher) -> None:
        self.publishers = publishers

    def publish(self, message: Mapping[str, Any]) -> None:
        for publisher in self.publishers:
            publisher.publish(message)

    def publish_with_field_image(self, message: Mapping[str, Any], frame: Any) -> None:
        """The frame goes to each publisher that sends images (MQTT); the others get the result only."""
        for publisher in self.publishers:
            with_image = getattr(publisher, "publish_with_field_image", None)
            if with_image is not None:
                with_image(message, frame)
            else:
                publisher.publish(message)

    def close(self) -> None:
        for publisher in self.publishers:
            publisher.close()


def make_publisher(config: PublisherConfig, device_id: str,
                   on_order: Callable[[dict[str, Any]], None] | None = None) -> Publisher:
    """The publisher the config's `type` names; `on_order` receives the server's orders (MQTT only)."""
    if isinstance(config, FilePublisherConfig):
        return FileSink(config.dir)
    if isinstance(config, StdoutPublisherConfig):
        return StdoutSink()
    if isinstance(config, MqttPublisherConfig):
        return _mqtt_publisher(config, device_id, on_order)
    raise ConfigError(f"publisher.type: unsupported {type(config).__name__}")


def _mqtt_publisher(config: MqttPublisherConfig, device_id: str,
                    on_order: Callable[[dict[str, Any]], None] | None) -> Publisher:
    """runtime.mqtt's durable publisher: SQLite outbox, QoS 1, receipts, orders."""
    from runtime.delivery.publisher import MediaSettings, DeliverySettings, MqttPublisher
    from runtime.delivery.outbox import Outbox

    settings = config.connection()  # relative TLS paths: from the working directory
    outbox = Outbox(config.outbox, max_payload_bytes=config.max_message_bytes)
    media = MediaSettings(field_images=config.field_images, jpeg_quality=config.jpeg_quality)
    return MqttPublisher(settings, site=config.site, device_id=device_id, outbox=outbox, on_order=on_order,
                         delivery=DeliverySettings(media=media))
