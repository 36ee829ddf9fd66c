"""`server.yaml`: typed, unknown keys refused, every error names its key."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from runtime.contracts.errors import ConfigError
from runtime.delivery.connection import MqttSettings, TlsFiles

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
MAX_WORKERS = 64
MAX_BATCH = 2000  # SQLite allows 32766 parameters per statement; a result row takes 10


@dataclass(frozen=True)
class BrokerConfig:
    """How the server reaches the broker (TLS with its own client certificate in production)."""

    host: str = "127.0.0.1"
    port: int = 8883
    client_id: str = "smearscope-server"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600

    def settings(self, base: Path) -> MqttSettings:
        tls = None
        if self.ca_file:
            tls = TlsFiles(*(base / p for p in (self.ca_file, self.cert_file or "", self.key_file or "")))
        return MqttSettings(host=self.host, port=self.port, client_id=self.client_id, tls=tls,
                            keepalive_s=self.keepalive_s, session_expiry_s=self.session_expiry_s)


@dataclass(frozen=True)
class WebConfig:
    """The web app `smearscope serve` runs beside the subscriber (see docs/web.md)."""

    enabled: bool = True
    host: str = "127.0.0.1"  # loopback: put a TLS reverse proxy in front (deploy/Caddyfile)
    port: int = 8080
    images_dir: str = "images"  # content-addressed field images, overlays and masks
    cookie_secure: bool = False  # True behind TLS: the session cookie is then sent over HTTPS only
    session_hours: float = 12.0
    guideline: str = "who"  # guideline of the diagnosis for uploaded smears
    upload_site: str = "web"
    upload_device_id: str = "web-upload"  # uploads are stored like a device's results under this id
    max_upload_files: int = 20
    max_upload_mb: float = 25.0
    max_upload_megapixels: float = 40.0
    login_attempts: int = 5  # failed sign-ins per user name and per address within the window
    login_window_s: int = 900
    access_log: str | None = None  # file for the access log (no patient ids); None: the process log
    pseudonym_secret_env: str | None = None  # env var with the site secret: uploads hash patient references as devices do

    def pseudonym_secret(self) -> bytes | None:
        """The site secret that turns a typed patient reference into the devices' pseudonymous id."""
        if not self.pseudonym_secret_env:
            return None
        value = os.environ.get(self.pseudonym_secret_env)
        if not value:
            raise ConfigError(f"web.pseudonym_secret_env: environment variable {self.pseudonym_secret_env} is not set")
        return value.encode("utf-8")

    def check(self) -> None:
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ConfigError(f"web.port: must be 1-65535, got {self.port!r}")
        if self.guideline not in ("who", "ada", "nice"):
            raise ConfigError(f"web.guideline: must be who, ada or nice, got {self.guideline!r}")
        for name in ("max_upload_files", "max_upload_mb", "max_upload_megapixels", "login_attempts",
                     "login_window_s", "session_hours"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"web.{name}: must be a positive number, got {value!r}")


@dataclass(frozen=True)
class ServerConfig:
    """Everything `smearscope serve` needs."""

    broker: BrokerConfig = field(default_factory=BrokerConfig)
    database: str = "sqlite:///smearscope-server.sqlite3"
    site: str = "+"
    share_group: str | None = "smearscope-servers"
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    web: WebConfig = field(default_factory=WebConfig)
    #: Server processes in this `serve` (each its own MQTT client `<client_id>-<i>` in `share_group`).
    workers: int = 1
    #: Most messages committed in one transaction (all of them are acknowledged after that commit).
    max_batch: int = 200
    base_dir: Path = Path(".")

    @classmethod
    def load(cls, path: str | Path) -> "ServerConfig":
        """Read and check a YAML file; relative paths in it are relative to the file."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return cls.from_dict(raw, base_dir=path.resolve().parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: Path = Path(".")) -> "ServerConfig":
        if not isinstance(raw, dict):
            raise ConfigError("server config: top level must be a mapping")
        _no_unknown(raw, cls, "", skip={"base_dir"})
        broker_raw = raw.get("broker", {}) or {}
        if not isinstance(broker_raw, dict):
            raise ConfigError("broker: must be a mapping")
        _no_unknown(broker_raw, BrokerConfig, "broker.")
        web_raw = raw.get("web", {}) or {}
        if not isinstance(web_raw, dict):
            raise ConfigError("web: must be a mapping")
        _no_unknown(web_raw, WebConfig, "web.")
        try:
            broker = BrokerConfig(**broker_raw)
            # No `web:` section: no web app (several subscribers on one host must not race for a port).
            web = WebConfig(**web_raw) if "web" in raw else WebConfig(enabled=False)
            cfg = cls(broker=broker, web=web, base_dir=base_dir,
                      **{k: v for k, v in raw.items() if k not in ("broker", "web")})
        except TypeError as exc:
            raise ConfigError(f"server config: {exc}") from exc
        cfg.check()
        return cfg

    def check(self) -> None:
        self.web.check()
        if not isinstance(self.broker.port, int) or not 0 < self.broker.port < 65536:
            raise ConfigError(f"broker.port: must be 1-65535, got {self.broker.port!r}")
        tls = (self.broker.ca_file, self.broker.cert_file, self.broker.key_file)
        if any(tls) and not all(tls):
            raise ConfigError("broker.ca_file: TLS needs ca_file, cert_file and key_file together")
        if not isinstance(self.max_payload_bytes, int) or self.max_payload_bytes < 1024:
            raise ConfigError(f"max_payload_bytes: must be an integer >= 1024, got {self.max_payload_bytes!r}")
        if not _is_int(self.workers) or not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers: must be an integer 1-{MAX_WORKERS}, got {self.workers!r}")
        if self.workers > 1 and not self.share_group:
            raise ConfigError("workers: more than one worker needs a share_group (else each gets every message)")
        if not _is_int(self.max_batch) or not 1 <= self.max_batch <= MAX_BATCH:
            raise ConfigError(f"max_batch: must be an integer 1-{MAX_BATCH}, got {self.max_batch!r}")
        if not isinstance(self.database, str) or not self.database.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigError("database: must be sqlite:///PATH or postgresql://USER@HOST/DB")

    def images_path(self) -> Path:
        """The web app's image folder, resolved against the config file."""
        p = Path(self.web.images_dir)
        return p if p.is_absolute() else self.base_dir / p

    def for_worker(self, index: int) -> "ServerConfig":
        """Worker `index` of `workers`: its own client id (its own persistent session) in the share group."""
        if self.workers == 1:
            return self
        return replace(self, workers=1, broker=replace(self.broker, client_id=f"{self.broker.client_id}-{index}"))

    def database_url(self) -> str:
        """The database URL with a relative SQLite path resolved against the config file."""
        if self.database.startswith("sqlite:///"):
            p = Path(self.database[len("sqlite:///"):])
            return "sqlite:///" + str(p if p.is_absolute() else self.base_dir / p)
        return self.database


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _no_unknown(raw: dict[str, Any], cls: type, prefix: str, skip: set[str] = frozenset()) -> None:
    known = {f.name for f in fields(cls)} - set(skip)
    for key in raw:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown key (expected one of {', '.join(sorted(known))})")
