"""`smearscope serve` as a real process with a real Mosquitto: the web app answers beside the
subscriber, a device's result appears in the inbox, and its retained status shows online, then
offline after it stops."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

import pytest

from mqtt_helpers import SITE, broker, certs, free_port, make_result, start_server_process, tls_settings, wait_for, write_server_config  # noqa: F401
from web_fixtures import PASSWORD


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


def test_web_config_errors_name_the_key(tmp_path: Path) -> None:
    from runtime.contracts.errors import ConfigError
    from server.config import ServerConfig

    assert not ServerConfig.from_dict({}).web.enabled  # no section: the subscriber alone
    assert ServerConfig.from_dict({"web": {}}).web.enabled
    assert ServerConfig.from_dict({"web": None}).web.enabled

    for text, key in (("web: {prot: 1}", "web.prot"), ("web: {port: 0}", "web.port"),
                      ("web: {guideline: xyz}", "web.guideline"), ("web: {max_upload_mb: -1}", "web.max_upload_mb"),
                      ("web: 3", "web")):
        path = tmp_path / "s.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            ServerConfig.load(path)


@pytest.mark.mosquitto
def test_serve_runs_the_web_app_beside_the_subscriber(tmp_path: Path, certs: Path, broker, cli_runner) -> None:
    from runtime.delivery.publisher import DeliverySettings, MqttPublisher
    from runtime.delivery.outbox import Outbox
    from smearscope.cli import cli

    cfg = write_server_config(tmp_path / "server.yaml", certs, broker.port, f"sqlite:///{tmp_path / 'db.sqlite3'}",
                              share_group=None)
    config = json.loads(cfg.read_text())
    port = free_port()
    config["web"] = {"port": port, "images_dir": str(tmp_path / "images"), "access_log": str(tmp_path / "access.log")}
    cfg.write_text(json.dumps(config))
    added = cli_runner.invoke(cli, ["users", "add", "dr.ana", "--role", "reviewer", "--config", str(cfg),
                                    "--password", PASSWORD])
    assert added.exit_code == 0, added.output
    process = start_server_process(cfg, tmp_path / "server.log")
    pub = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(base + "/healthz") == 200, 30, "the web app")
        # The web app can answer before the subscriber's subscription is in place: a result sent
        # before it reaches nobody, and the device's resend (here after 2 s) brings it.
        pub = MqttPublisher(tls_settings(certs, "dev-a", broker.port), site=SITE, device_id="dev-a",
                            outbox=Outbox(tmp_path / "o.db"), delivery=DeliverySettings(resend_after_s=2.0))
        result = make_result("dev-a", 0, patient_id="p-serve")
        pub.publish(result)
        assert pub.wait_drained(30)

        from server.store import Store
        from server.web.db import Database

        db = Database(Store(f"sqlite:///{tmp_path / 'db.sqlite3'}"))
        state = lambda: (db.query("SELECT state FROM device_status WHERE device_id = 'dev-a'") or [[None]])[0][0]  # noqa: E731
        wait_for(lambda: state() == "online", 15, "dev-a online")
        pub.close()
        pub = None
        wait_for(lambda: state() == "offline", 15, "dev-a offline")
        db.close()

        import httpx

        with httpx.Client(base_url=base) as client:
            login = client.get("/login").text
            token = login.split('name="csrf" value="')[1].split('"')[0]
            assert client.post("/login", data={"username": "dr.ana", "password": PASSWORD, "csrf": token}).status_code in (200, 303)
            inbox = client.get("/", follow_redirects=True).text
            assert result["result_id"] in inbox and "dev-a" in inbox
            devices = client.get("/devices").text
            assert "st-offline" in devices
        log_text = (tmp_path / "access.log").read_text()
        assert "GET /devices 200 dr.ana" in log_text and "p-serve" not in log_text
    finally:
        if pub is not None:
            pub.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, (tmp_path / "server.log").read_text()[-2000:]
