"""How to reach the MQTT broker: one model for the device's publisher and the server.

The file keys (`host`, `port`, `ca_file`, `cert_file`, `key_file`, `keepalive_s`, ...) and their
ranges are defined once here; the device's `publisher: {type: mqtt}` section and the server's
`broker:` section extend this model with their own keys. TLS is client-certificate TLS: the CA
that signed the broker, this client's certificate and its key, all three or none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from runtime.contracts.validation import Section, rule

Port = Annotated[int, Field(ge=1, le=65535)]
Host = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[^\s/]+$")]
KeepaliveS = Annotated[int, Field(ge=5, le=65535)]
"""MQTT's keepalive is 16 bits; under 5 s a busy device would be disconnected for a slow frame."""
SessionExpiryS = Annotated[int, Field(ge=1, le=2**32 - 1)]
"""A persistent session must outlive a drop (> 0); MQTT 5 stores it in 32 bits."""


@dataclass(frozen=True)
class TlsFiles:
    """Client-certificate TLS: the CA that signed the broker, and this client's certificate and key."""

    ca: Path
    cert: Path
    key: Path


class MqttSettings(Section):
    """Where and how to connect. `session_expiry_s` keeps the broker-side session across drops."""

    host: Host = "127.0.0.1"
    port: Port = 1883
    client_id: Annotated[str, Field(max_length=128)] = ""
    ca_file: Annotated[str, Field(min_length=1)] | None = None
    cert_file: Annotated[str, Field(min_length=1)] | None = None
    key_file: Annotated[str, Field(min_length=1)] | None = None
    keepalive_s: KeepaliveS = 30
    session_expiry_s: SessionExpiryS = 7 * 24 * 3600
    reconnect_min_s: Annotated[float, Field(gt=0, le=60)] = 0.2
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 100

    @model_validator(mode="before")
    @classmethod
    def _unfold_tls(cls, data: Any) -> Any:
        """Code may pass `tls=TlsFiles(...)`; files write the three keys."""
        if isinstance(data, dict) and isinstance(data.get("tls"), (TlsFiles, type(None))) and "tls" in data:
            data = dict(data)
            tls = data.pop("tls")
            if tls is not None:
                data.update(ca_file=str(tls.ca), cert_file=str(tls.cert), key_file=str(tls.key))
        return data

    @model_validator(mode="after")
    def _tls_all_or_none(self) -> "MqttSettings":
        files = (self.ca_file, self.cert_file, self.key_file)
        rule(all(files) or not any(files), "ca_file", "TLS needs ca_file, cert_file and key_file together")
        rule(self.reconnect_min_s <= self.reconnect_max_s, "reconnect_min_s",
             f"must not exceed reconnect_max_s ({self.reconnect_max_s:g}), got {self.reconnect_min_s:g}")
        return self

    @property
    def tls(self) -> TlsFiles | None:
        if not self.ca_file:
            return None
        return TlsFiles(Path(self.ca_file), Path(self.cert_file or ""), Path(self.key_file or ""))

    def connection(self, base_dir: Path | None = None, **changes: Any) -> "MqttSettings":
        """Just the connection settings (a subclass's own keys dropped), relative TLS paths taken
        from `base_dir` when given, with `changes` applied."""
        values = {name: getattr(self, name) for name in MqttSettings.model_fields}
        if base_dir is not None:
            for key in ("ca_file", "cert_file", "key_file"):
                if values[key]:
                    values[key] = str(base_dir / values[key])
        return MqttSettings.model_validate({**values, **changes})
