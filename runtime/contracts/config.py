"""Typed device configuration, loaded from YAML and validated before anything starts.

Every section is a frozen pydantic model (runtime.contracts.validation): an unknown key, a missing
required key or a value of the wrong type or out of range raises ConfigError naming the key path
(``camera.width: must be >= 32, got -3``). Every numeric setting has a range; `smearscope config
check` enforces them and `smearscope run` relies on them. Hardware and services sit behind small
interfaces chosen by a ``type`` field (camera, trigger, publisher, bridge), so the section for one
type accepts only that type's keys. `smearscope config schema` prints the JSON Schema.

Relative paths in a config are taken relative to the current working directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from runtime.contracts.errors import ConfigError
from runtime.contracts.mqtt_settings import Host, MqttSettings, Port
from runtime.contracts.plausible import ImplausibleValue, check_calibration
from runtime.contracts.safe_load import load_yaml_file
from runtime.contracts.validation import NAME, ListTuple, Section, rule, text_matching, validate_section

ProviderName = Literal["tensorrt", "cuda", "cpu", "openvino", "xnnpack", "coreml"]

Text = Annotated[str, Field(min_length=1, max_length=4096)]
def _plausible_calibration(value: float) -> float:
    """The one table of plausible calibrations (runtime.contracts.plausible) decides, in its words."""
    try:
        return check_calibration(value, source="um_per_px")
    except ImplausibleValue as exc:
        raise ValueError(str(exc).partition(": ")[2]) from None


UmPerPx = Annotated[float, AfterValidator(_plausible_calibration)]
"""µm per camera pixel, within runtime.contracts.plausible.CALIBRATION (0.01: a 100x objective on a
high-resolution sensor, to 10: a scanner overview)."""
Interval = Annotated[float, Field(ge=0.01, le=3600)]
"""A wait between attempts: zero would busy-loop, an hour is the most a device should sleep unseen."""


EnvName = text_matching(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", "must be an environment variable's name")


# --------------------------------------------------------------------------- sections


class ModelConfig(Section):
    """The segmentation model and how ONNX Runtime runs it."""

    path: Text | None = None  # None: models/segmentation.int8.onnx in the shipped models folder
    providers: Annotated[tuple[ProviderName, ...], ListTuple, Field(min_length=1, max_length=6)] = ("tensorrt", "cuda", "cpu")
    threads: Annotated[int, Field(ge=0, le=64)] = 0  # 0: ONNX Runtime's default (one per core)
    warmup: bool = True
    flip_average: bool | None = None
    """None: as the model card's inference plan says; false saves two network runs per field."""


class SyntheticCameraConfig(Section):
    """Synthetic smears from the generator: a reproducible camera for demos and tests."""

    type: Literal["synthetic"] = "synthetic"
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    width: Annotated[int, Field(ge=32, le=4096)] = 640
    height: Annotated[int, Field(ge=32, le=4096)] = 480
    um_per_px: UmPerPx = 0.25  # the generator's own scale; not a calibration of a real microscope


class FolderCameraConfig(Section):
    """Images from a folder, in name order: a slide scanner's drop folder, or recorded fields."""

    type: Literal["folder"] = "folder"
    path: Text
    pattern: Text = "*"
    loop: bool = True


class OpenCVCameraConfig(Section):
    """An OpenCV capture: a device index (UVC camera), a GStreamer pipeline string, a file or URL."""

    type: Literal["opencv"] = "opencv"
    source: Annotated[int, Field(ge=0, le=255)] | Annotated[str, Field(pattern=r"\S", max_length=4096)]
    width: Annotated[int, Field(ge=16, le=16384)] | None = None
    height: Annotated[int, Field(ge=16, le=16384)] | None = None
    backend: Literal["auto", "v4l2", "gstreamer", "ffmpeg", "images"] = "auto"
    discard_frames: Annotated[int, Field(ge=0, le=100)] = 2  # stale frames in the driver's buffer dropped before a capture
    reconnect_interval_s: Interval = 2.0


CameraConfig = Annotated[
    Union[SyntheticCameraConfig, FolderCameraConfig, OpenCVCameraConfig], Field(discriminator="type")
]


class QualityConfig(Section):
    """Thresholds of the quality gate; a frame failing any of them is rejected with a reason."""

    enabled: bool = True
    min_focus: Annotated[float, Field(ge=0, le=1e6)] = 30.0  # variance of the Laplacian of the grey frame at the model scale
    min_brightness: Annotated[float, Field(ge=0, le=255)] = 40.0  # mean grey level, 0-255
    max_brightness: Annotated[float, Field(ge=0, le=255)] = 245.0
    max_clipped_fraction: Annotated[float, Field(gt=0, le=1)] = 0.25  # share of pixels at 0 or 255 in any channel
    min_cell_coverage: Annotated[float, Field(ge=0, lt=1)] = 0.01  # share of the frame covered by stained objects
    analyze_rejected: bool = False  # also run the model on rejected frames (results stay flagged)

    @model_validator(mode="after")
    def _brightness_order(self) -> "QualityConfig":
        rule(self.min_brightness < self.max_brightness, "min_brightness",
             f"need 0 <= min_brightness < max_brightness <= 255, got {self.min_brightness:g} and {self.max_brightness:g}")
        return self


class StdinTriggerConfig(Section):
    """Enter on the keyboard (or a line on stdin) captures; `q` quits."""

    type: Literal["stdin"] = "stdin"


class IntervalTriggerConfig(Section):
    """A capture every `seconds`; `count` captures then stop (0: forever). For testing and soak runs."""

    type: Literal["interval"] = "interval"
    seconds: Interval = 5.0
    count: Annotated[int, Field(ge=0, le=10**9)] = 0


class BridgeTriggerConfig(Section):
    """The microscope controller's CAPTURE button and status LED, through firmware_bridge.

    `bridge` is the bridge's own section, validated by firmware_bridge's models (which this package
    does not import at load time: contracts import nothing else of the project): `{type: serial,
    port: ...}` for the controller on USB, `{type: gpio, button_line: 17, ...}` for a button wired
    to a Pi, `{type: simulator}` for the protocol simulator on a pseudo-terminal.
    """

    type: Literal["bridge"] = "bridge"
    bridge: dict[str, Any] = Field(default_factory=lambda: {"type": "serial"},
                                   json_schema_extra={"description": "firmware_bridge settings: type serial, gpio or simulator"})

    @field_validator("bridge")
    @classmethod
    def _bridge_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        from firmware_bridge.api import BridgeConfigError, parse_settings

        try:
            parse_settings(value)
        except BridgeConfigError as exc:  # "bridge.KEY: problem" -> reported at trigger.bridge.KEY
            found = re.match(r"bridge\.([\w.\[\]]+):? (.*)", str(exc))
            key, problem = found.groups() if found else ("", str(exc))
            raise PydanticCustomError("field_rule", problem, {"key": key} if key else {}) from None
        return value


TriggerConfig = Annotated[
    Union[StdinTriggerConfig, IntervalTriggerConfig, BridgeTriggerConfig], Field(discriminator="type")
]


class FilePublisherConfig(Section):
    """One JSON file per result in a folder."""

    type: Literal["file"] = "file"
    dir: Text = "results"


class StdoutPublisherConfig(Section):
    """One JSON line per result on standard output."""

    type: Literal["stdout"] = "stdout"


class MqttPublisherConfig(MqttSettings):
    """Durable delivery to the central server: SQLite outbox, then MQTT with receipts.

    The connection keys (host, port, TLS files, keepalive...) are the shared MqttSettings'.
    """

    type: Literal["mqtt"] = "mqtt"
    host: Host
    port: Port = 8883
    site: NAME = "site"
    outbox: Text = "outbox.sqlite3"
    max_message_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = 256 * 1024
    field_images: bool = True
    """Each analysed frame also goes to the server as JPEG parts through the outbox (docs/delivery.md)."""
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 85


PublisherConfig = Annotated[
    Union[FilePublisherConfig, StdoutPublisherConfig, MqttPublisherConfig], Field(discriminator="type")
]


class SampleConfig(Section):
    """Which sample the captures belong to, or a worklist of samples, and its lab values."""

    sample_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    patient_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    labs: dict[str, float | str | bool] = Field(default_factory=dict)
    worklist: Text | None = None  # CSV or JSON file of samples with their lab values
    fields_per_sample: Annotated[int, Field(ge=1, le=1000)] = 1  # captures per sample before the worklist moves on
    pseudonym_secret_env: EnvName | None = None
    """Name of the environment variable holding the site secret that hashes patient ids."""

    @model_validator(mode="after")
    def _one_source(self) -> "SampleConfig":
        rule(not (self.worklist and self.sample_id), "worklist", "give either a worklist or a sample_id, not both")
        # Lab values belong to one sample: never drop them, never guess which (config check says so too).
        rule(not (self.labs and self.worklist), "labs", "lab values given with a worklist; put them in the worklist's "
             "rows (or give a sample_id / run --sample-id instead of the worklist)")
        rule(not self.labs or bool(self.sample_id or self.worklist), "labs", "lab values need a sample: give "
             "sample.sample_id (run --sample-id) or a worklist with the labs in its rows")
        return self


class DiagnosisConfig(Section):
    """Guideline-based decision support on the sample's lab values and the smear."""

    enabled: bool = True
    guideline: Literal["who", "ada", "nice"] = "who"
    model: Text | None = None  # diagnosis network; None: the shipped one when present


class OutputConfig(Section):
    """Local files besides the published result."""

    overlays_dir: Text | None = None  # write <result_id>.overlay.png here
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class DeviceConfig(Section):
    """The whole device: one file, validated before the device starts."""

    device_id: NAME = "scope-01"
    um_per_px: UmPerPx | None = None  # microscope calibration; enables µm² areas and densities
    model: ModelConfig = Field(default_factory=ModelConfig)
    camera: CameraConfig = Field(default_factory=SyntheticCameraConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    trigger: TriggerConfig = Field(default_factory=StdinTriggerConfig)
    publisher: PublisherConfig = Field(default_factory=FilePublisherConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    diagnosis: DiagnosisConfig = Field(default_factory=DiagnosisConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path) -> DeviceConfig:
    """Read and validate a YAML device config; every problem is one ConfigError line naming file and key."""
    data = load_yaml_file(path, "config file")
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_from_dict(data: Any) -> DeviceConfig:
    """Build a DeviceConfig from plain data (parsed YAML or JSON)."""
    return validate_section(DeviceConfig, data)


def config_to_dict(config: Section) -> dict[str, Any]:
    """Plain data (for printing and round trips): tuples become lists."""
    return config.to_plain()


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a device config file (for editors)."""
    return DeviceConfig.model_json_schema()
