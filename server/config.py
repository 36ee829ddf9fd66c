"""`server.yaml`: typed, unknown keys refused, every error one line naming its key.

The `broker:` section is the shared MQTT settings model (runtime.contracts.mqtt_settings) with
the server's own defaults; TLS file paths in it are relative to the config file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PrivateAttr

from runtime.contracts.errors import ConfigError
from runtime.contracts.mqtt_settings import MqttSettings, Port
from runtime.contracts.safe_load import load_yaml_file
from runtime.contracts.validation import NAME, Section, text_matching, validate_section

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
DatabaseUrl = text_matching(r"^(sqlite:///|postgresql://|postgres://)\S", "must be sqlite:///PATH or postgresql://USER@HOST/DB")
SiteFilter = text_matching(r"^(\+|[A-Za-z0-9_.-]{1,64})$", "a site name (1-64 letters, digits, '_', '.', '-') or + for all")


class BrokerConfig(MqttSettings):
    """How the server reaches the broker (TLS with its own client certificate in production)."""

    port: Port = 8883
    client_id: Annotated[NAME, Field(min_length=1)] = "smearscope-server"

    def settings(self, base: Path) -> MqttSettings:
        """The connection settings, relative TLS paths taken from `base` (the config file's folder)."""
        return self.connection(base_dir=base)


class ServerConfig(Section):
    """Everything `smearscope serve` needs."""

    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    database: DatabaseUrl = "sqlite:///smearscope-server.sqlite3"
    site: SiteFilter = "+"
    share_group: NAME | None = "smearscope-servers"
    max_payload_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = DEFAULT_MAX_PAYLOAD_BYTES
    _base_dir: Path = PrivateAttr(default=Path("."))

    @property
    def base_dir(self) -> Path:
        """The folder relative paths are taken from: the config file's (the working directory otherwise)."""
        return self._base_dir

    @classmethod
    def load(cls, path: str | Path) -> "ServerConfig":
        """Read and check a YAML file; relative paths in it are relative to the file."""
        path = Path(path)
        raw = load_yaml_file(path, "server config")
        try:
            return cls.from_dict(raw, base_dir=path.resolve().parent)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, raw: Any, base_dir: Path = Path(".")) -> "ServerConfig":
        config = validate_section(cls, raw)
        config._base_dir = base_dir
        return config

    def database_url(self) -> str:
        """The database URL with a relative SQLite path resolved against the config file."""
        if self.database.startswith("sqlite:///"):
            p = Path(self.database[len("sqlite:///"):])
            return "sqlite:///" + str(p if p.is_absolute() else self.base_dir / p)
        return self.database


def server_config_schema() -> dict[str, Any]:
    """The JSON Schema of `server.yaml` (for editors)."""
    return ServerConfig.model_json_schema()
