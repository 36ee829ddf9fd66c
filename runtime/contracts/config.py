"""Typed device configuration, loaded from YAML and validated before anything starts.

Every section is a frozen dataclass. Loading walks the YAML against the dataclasses' type hints:
an unknown key, a missing required key or a value of the wrong type or range raises ConfigError
naming the key path (``camera.width: must be a positive integer, got -3``). Hardware and services
sit behind small interfaces chosen by a ``type`` field (camera, trigger, publisher), so the
section for one type accepts only that type's keys.

Relative paths in a config are taken relative to the current working directory.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from runtime.contracts.errors import ConfigError

ProviderName = Literal["tensorrt", "cuda", "cpu", "openvino", "xnnpack", "coreml"]


class _Invalid(ConfigError):
    """Raised inside a section's checks; the loader re-raises it as ConfigError with the full path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise _Invalid(key, message)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ModelConfig:
    """The segmentation model and how ONNX Runtime runs it."""

    path: str | None = None  # None: models/segmentation.int8.onnx in the shipped models folder
    providers: tuple[ProviderName, ...] = ("tensorrt", "cuda", "cpu")
    threads: int = 0  # 0: ONNX Runtime's default (one per core)
    warmup: bool = True
    flip_average: bool | None = None
    """None: as the model card's inference plan says; false saves two network runs per field."""

    def __post_init__(self) -> None:
        _require(self.threads >= 0, "threads", f"must be 0 (automatic) or a positive count, got {self.threads}")
        _require(len(self.providers) > 0, "providers", "list at least one execution provider")


@dataclass(frozen=True)
class SyntheticCameraConfig:
    """Synthetic smears from the generator: a reproducible camera for demos and tests."""

    type: Literal["synthetic"] = "synthetic"
    seed: int = 0
    width: int = 640
    height: int = 480
    um_per_px: float = 0.25  # the generator's own scale; not a calibration of a real microscope

    def __post_init__(self) -> None:
        _require(self.width >= 32, "width", f"must be at least 32 px, got {self.width}")
        _require(self.height >= 32, "height", f"must be at least 32 px, got {self.height}")
        _require(self.um_per_px > 0, "um_per_px", f"must be positive, got {self.um_per_px}")


@dataclass(frozen=True)
class FolderCameraConfig:
    """Images from a folder, in name order: a slide scanner's drop folder, or recorded fields."""

    path: str
    type: Literal["folder"] = "folder"
    pattern: str = "*"
    loop: bool = True

    def __post_init__(self) -> None:
        _require(bool(self.path), "path", "must name a folder")


@dataclass(frozen=True)
class OpenCVCameraConfig:
    """An OpenCV capture: a device index (UVC camera), a GStreamer pipeline string, a file or URL."""

    source: int | str
    type: Literal["opencv"] = "opencv"
    width: int | None = None
    height: int | None = None
    backend: Literal["auto", "v4l2", "gstreamer", "ffmpeg", "images"] = "auto"
    discard_frames: int = 2  # stale frames in the driver's buffer are dropped before a capture
    reconnect_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.source, int):
            _require(self.source >= 0, "source", f"a device index must be >= 0, got {self.source}")
        else:
            _require(bool(self.source.strip()), "source", "must be a device index, pipeline, file or URL")
        for key in ("width", "height"):
            value = getattr(self, key)
            _require(value is None or value > 0, key, f"must be a positive integer, got {value}")
        _require(self.discard_frames >= 0, "discard_frames", f"must be >= 0, got {self.discard_frames}")
        _require(self.reconnect_interval_s >= 0, "reconnect_interval_s", "must be >= 0")


CameraConfig = Union[SyntheticCameraConfig, FolderCameraConfig, OpenCVCameraConfig]


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality gate; a frame failing any of them is rejected with a reason."""

    enabled: bool = True
    min_focus: float = 30.0  # variance of the Laplacian of the grey frame at the model scale (never upsampled)
    min_brightness: float = 40.0  # mean grey level, 0-255
    max_brightness: float = 245.0
    max_clipped_fraction: float = 0.25  # share of pixels at 0 or 255 in any channel
    min_cell_coverage: float = 0.01  # share of the frame covered by stained objects
    analyze_rejected: bool = False  # also run the model on rejected frames (results stay flagged)

    def __post_init__(self) -> None:
        _require(self.min_focus >= 0, "min_focus", "must be >= 0")
        _require(0 <= self.min_brightness < self.max_brightness <= 255, "min_brightness",
                 "need 0 <= min_brightness < max_brightness <= 255")
        _require(0 < self.max_clipped_fraction <= 1, "max_clipped_fraction", "must be in (0, 1]")
        _require(0 <= self.min_cell_coverage < 1, "min_cell_coverage", "must be in [0, 1)")


@dataclass(frozen=True)
class StdinTriggerConfig:
    """Enter on the keyboard (or a line on stdin) captures; `q` quits."""

    type: Literal["stdin"] = "stdin"


@dataclass(frozen=True)
class IntervalTriggerConfig:
    """A capture every `seconds`; `count` captures then stop (0: forever). For testing and soak runs."""

    type: Literal["interval"] = "interval"
    seconds: float = 5.0
    count: int = 0

    def __post_init__(self) -> None:
        _require(self.seconds > 0, "seconds", f"must be positive, got {self.seconds}")
        _require(self.count >= 0, "count", f"must be >= 0, got {self.count}")


@dataclass(frozen=True)
class BridgeTriggerConfig:
    """The microscope controller's CAPTURE button and status LED, through firmware_bridge.

    `bridge` is the bridge's own config, validated by firmware_bridge: `{type: serial, port: ...}`
    for the controller on USB, `{type: gpio, button_line: 17, ...}` for a button wired to a Pi,
    `{type: simulator}` for the protocol simulator on a pseudo-terminal.
    """

    type: Literal["bridge"] = "bridge"
    bridge: dict[str, Any] = field(default_factory=lambda: {"type": "serial"})

    def __post_init__(self) -> None:
        from firmware_bridge import BridgeConfigError
        from firmware_bridge.api import parse_settings

        try:
            parse_settings(self.bridge)
        except BridgeConfigError as exc:
            message = str(exc)
            key, sep, rest = message.partition(": ")
            if sep and key.startswith("bridge."):
                raise _Invalid(key, rest) from None
            raise _Invalid("bridge", message) from None


TriggerConfig = Union[StdinTriggerConfig, IntervalTriggerConfig, BridgeTriggerConfig]


@dataclass(frozen=True)
class FilePublisherConfig:
    """One JSON file per result in a folder."""

    type: Literal["file"] = "file"
    dir: str = "results"


@dataclass(frozen=True)
class StdoutPublisherConfig:
    """One JSON line per result on standard output."""

    type: Literal["stdout"] = "stdout"


@dataclass(frozen=True)
class MqttPublisherConfig:
    """Durable delivery to the central server: SQLite outbox, then MQTT with receipts."""

    host: str
    type: Literal["mqtt"] = "mqtt"
    port: int = 8883
    site: str = "site"
    outbox: str = "outbox.sqlite3"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    max_message_bytes: int = 256 * 1024
    # Field images: each analysed frame also goes to the server as JPEG parts (docs/delivery.md).
    field_images: bool = True
    jpeg_quality: int = 85

    def __post_init__(self) -> None:
        _require(1 <= self.jpeg_quality <= 100, "jpeg_quality", f"must be 1-100, got {self.jpeg_quality}")
        _require(bool(self.host), "host", "must name the broker")
        _require(0 < self.port < 65536, "port", f"must be 1-65535, got {self.port}")
        _require(self.keepalive_s > 0, "keepalive_s", "must be positive")
        _require(self.max_message_bytes >= 1024, "max_message_bytes", "must be at least 1024")
        tls = (self.ca_file, self.cert_file, self.key_file)
        _require(all(tls) or not any(tls), "ca_file", "TLS needs ca_file, cert_file and key_file together")


PublisherConfig = Union[FilePublisherConfig, StdoutPublisherConfig, MqttPublisherConfig]


@dataclass(frozen=True)
class SampleConfig:
    """Which sample the captures belong to, or a worklist of samples, and its lab values."""

    sample_id: str | None = None
    patient_id: str | None = None
    labs: dict[str, float | str | bool] = field(default_factory=dict)
    worklist: str | None = None  # CSV or JSON file of samples with their lab values
    fields_per_sample: int = 1  # captures per sample before the worklist moves on
    pseudonym_secret_env: str | None = None  # env var holding the site secret that hashes patient ids

    def __post_init__(self) -> None:
        _require(self.fields_per_sample >= 1, "fields_per_sample", f"must be >= 1, got {self.fields_per_sample}")
        _require(not (self.worklist and self.sample_id), "worklist", "give either a worklist or a sample_id, not both")


@dataclass(frozen=True)
class DiagnosisConfig:
    """Guideline-based decision support on the sample's lab values and the smear."""

    enabled: bool = True
    guideline: Literal["who", "ada", "nice"] = "who"
    model: str | None = None  # diagnosis network; None: the shipped one when present


@dataclass(frozen=True)
class OutputConfig:
    """Local files besides the published result."""

    overlays_dir: str | None = None  # write <result_id>.overlay.png here
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class DeviceConfig:
    """The whole device: one file, validated before the device starts."""

    device_id: str = "scope-01"
    um_per_px: float | None = None  # microscope calibration; enables µm² areas and densities
    model: ModelConfig = field(default_factory=ModelConfig)
    camera: CameraConfig = field(default_factory=SyntheticCameraConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    trigger: TriggerConfig = field(default_factory=StdinTriggerConfig)
    publisher: PublisherConfig = field(default_factory=FilePublisherConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    diagnosis: DiagnosisConfig = field(default_factory=DiagnosisConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        import re

        _require(bool(re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.device_id)), "device_id",
                 f"use 1-64 letters, digits, '_', '.' or '-', got {self.device_id!r}")
        _require(self.um_per_px is None or self.um_per_px > 0, "um_per_px", f"must be positive, got {self.um_per_px}")


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path) -> DeviceConfig:
    """Read and validate a YAML device config; every problem is a ConfigError naming file and key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        data = {}
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def config_from_dict(data: Any) -> DeviceConfig:
    """Build a DeviceConfig from plain data (parsed YAML or JSON)."""
    return _build(DeviceConfig, data, "")


def config_to_dict(config: Any) -> Any:
    """Plain data (for printing and round trips): tuples become lists."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (tuple, list)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _build(cls: type, data: Any, path: str) -> Any:
    where = path or "(top level)"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(
            f"{_join(path, unknown[0])}: unknown key" + (f" (also {', '.join(unknown[1:])})" if unknown[1:] else "")
            + f"; allowed: {', '.join(fields)}"
        )
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in data:
            values[name] = _convert(hints[name], data[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key_path}: required key is missing")
    try:
        return cls(**values)
    except _Invalid as exc:
        raise ConfigError(f"{_join(path, exc.key)}: {exc.message}") from None


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return _convert_union(args, value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_describe(value)}")
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(value)}")
        return {str(k): _convert(args[1], v, _join(path, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected text, got {_describe(value)}")
        return value
    if hint is Any:
        return value
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{path}: expected null, got {_describe(value)}")
        return None
    raise TypeError(f"config field type {hint!r} at {path} is not supported")  # a bug, not user input


def _convert_union(args: tuple[Any, ...], value: Any, path: str) -> Any:
    sections = [a for a in args if dataclasses.is_dataclass(a)]
    if sections:
        return _convert_tagged(sections, value, path)
    if value is None and type(None) in args:
        return None
    for arg in (a for a in args if a is not type(None)):
        try:
            return _convert(arg, value, path)
        except ConfigError:
            continue
    allowed = " or ".join(_type_word(a) for a in args)
    raise ConfigError(f"{path}: expected {allowed}, got {_describe(value)}")


def _type_word(hint: Any) -> str:
    return {int: "an integer", float: "a number", str: "text", bool: "true/false", type(None): "null"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _convert_tagged(sections: list[type], value: Any, path: str) -> Any:
    """A section chosen by its `type` field; each candidate dataclass declares a Literal type."""
    by_type = {typing.get_args(typing.get_type_hints(s)["type"])[0]: s for s in sections}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'type' key, got {_describe(value)}")
    kind = value.get("type")
    if kind is None:
        raise ConfigError(f"{_join(path, 'type')}: required key is missing; one of {', '.join(by_type)}")
    if kind not in by_type:
        raise ConfigError(f"{_join(path, 'type')}: unknown type {kind!r}; one of {', '.join(by_type)}")
    return _build(by_type[kind], value, path)
