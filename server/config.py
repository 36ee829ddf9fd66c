"""`server.yaml`: typed, unknown keys refused, every error one line naming its key.

The `broker:` section is the shared MQTT settings model (runtime.contracts.mqtt_settings) with
the server's own defaults; TLS file paths in it are relative to the config file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from runtime.contracts.errors import ConfigError
from runtime.contracts.mqtt_settings import MqttSettings, Port
from runtime.contracts.safe_load import load_yaml_file
from runtime.contracts.validation import NAME, Section, rule, text_matching, validate_section

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
MAX_WORKERS = 64
MAX_BATCH = 2000  # SQLite allows 32766 parameters per statement; a result row takes 10
DatabaseUrl = text_matching(r"^(sqlite:///|postgresql://|postgres://)\S", "must be sqlite:///PATH or postgresql://USER@HOST/DB")
SiteFilter = text_matching(r"^(\+|[A-Za-z0-9_.-]{1,64})$", "a site name (1-64 letters, digits, '_', '.', '-') or + for all")


class BrokerConfig(MqttSettings):
    """How the server reaches the broker (TLS with its own client certificate in production)."""

    port: Port = 8883
    client_id: Annotated[NAME, Field(min_length=1)] = "smearscope-server"

    def settings(self, base: Path) -> MqttSettings:
        """The connection settings, relative TLS paths taken from `base` (the config file's folder)."""
        return self.connection(base_dir=base)


class WebConfig(Section):
    """The web app `smearscope serve` runs beside the subscriber (see docs/web.md)."""

    section_path = "web"

    enabled: bool = True
    host: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[^\s/]+$")] = "127.0.0.1"
    """Loopback: put a TLS reverse proxy in front (deploy/Caddyfile)."""
    port: Port = 8080
    images_dir: Annotated[str, Field(min_length=1)] = "images"
    """Content-addressed field images, overlays and masks."""
    cookie_secure: bool = False
    """True behind TLS: the session cookie is then sent over HTTPS only."""
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 12.0
    guideline: Literal["who", "ada", "nice"] = "who"
    """Guideline of the diagnosis for uploaded smears."""
    upload_site: NAME = "web"
    upload_device_id: NAME = "web-upload"
    """Uploads are stored like a device's results under this id."""
    max_upload_files: Annotated[int, Field(ge=1, le=500)] = 20
    max_upload_mb: Annotated[float, Field(gt=0, le=1024)] = 25.0
    max_upload_megapixels: Annotated[float, Field(gt=0, le=200)] = 40.0
    login_attempts: Annotated[int, Field(ge=1, le=1000)] = 5
    """Failed sign-ins per user name and per address within the window."""
    login_window_s: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] = 900
    access_log: Annotated[str, Field(min_length=1)] | None = None
    """File for the access log (no patient ids); None: the process log."""
    pseudonym_secret_env: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    """Environment variable with the site secret: uploads hash patient references as devices do."""

    def pseudonym_secret(self) -> bytes | None:
        """The site secret that turns a typed patient reference into the devices' pseudonymous id."""
        if not self.pseudonym_secret_env:
            return None
        value = os.environ.get(self.pseudonym_secret_env)
        if not value:
            raise ConfigError(f"web.pseudonym_secret_env: environment variable {self.pseudonym_secret_env} is not set")
        return value.encode("utf-8")


class ServerConfig(Section):
    """Everything `smearscope serve` needs."""

    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    database: DatabaseUrl = "sqlite:///smearscope-server.sqlite3"
    site: SiteFilter = "+"
    share_group: NAME | None = "smearscope-servers"
    max_payload_bytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = DEFAULT_MAX_PAYLOAD_BYTES
    web: WebConfig = Field(default_factory=lambda: WebConfig(enabled=False))
    """No `web:` section: no web app (several subscribers on one host must not race for a port)."""
    workers: Annotated[int, Field(ge=1, le=MAX_WORKERS)] = 1
    """Server processes in this `serve` (each its own MQTT client `<client_id>-<i>` in `share_group`)."""
    max_batch: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 200
    """Most messages committed in one transaction (all of them are acknowledged after that commit)."""
    _base_dir: Path = PrivateAttr(default=Path("."))

    @model_validator(mode="after")
    def _workers_share(self) -> "ServerConfig":
        rule(self.workers == 1 or bool(self.share_group), "workers",
             "more than one worker needs a share_group (else each gets every message)")
        return self

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
        if isinstance(raw, dict) and "web" in raw and raw["web"] is None:
            raw = {**raw, "web": {}}  # a bare `web:` line: the web app with its defaults
        config = validate_section(cls, raw)
        config._base_dir = base_dir
        return config

    def images_path(self) -> Path:
        """The web app's image folder, resolved against the config file."""
        p = Path(self.web.images_dir)
        return p if p.is_absolute() else self.base_dir / p

    def for_worker(self, index: int) -> "ServerConfig":
        """Worker `index` of `workers`: its own client id (its own persistent session) in the share group."""
        if self.workers == 1:
            return self
        broker = self.broker.model_copy(update={"client_id": f"{self.broker.client_id}-{index}"})
        config = self.model_copy(update={"workers": 1, "broker": broker})
        config._base_dir = self.base_dir
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
