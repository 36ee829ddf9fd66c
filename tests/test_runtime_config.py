"""Typed device config: every shipped example is valid; bad files name the key and the problem."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime.contracts.config import (
    BridgeTriggerConfig,
    DeviceConfig,
    OpenCVCameraConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)
from runtime.contracts.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "runtime" / "device" / "examples").glob("*.yaml"))


def test_examples_exist_and_are_valid():
    names = {p.name for p in EXAMPLES}
    assert {"default.yaml", "pi.yaml", "jetson.yaml"} <= names
    for path in EXAMPLES:
        assert isinstance(load_config(path), DeviceConfig), path


def test_empty_config_is_all_defaults_and_round_trips():
    cfg = config_from_dict({})
    assert cfg == DeviceConfig()
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_type_field_picks_the_section_and_its_keys():
    cfg = config_from_dict({"camera": {"type": "opencv", "source": "libcamerasrc ! videoconvert ! appsink"}})
    assert isinstance(cfg.camera, OpenCVCameraConfig)
    cfg = config_from_dict({"trigger": {"type": "bridge", "bridge": {"type": "serial", "port": "/dev/ttyACM0"}}})
    assert isinstance(cfg.trigger, BridgeTriggerConfig)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"camra": {}}, r"^camra: unknown key; allowed: device_id"),
        ({"camera": {"type": "synthetic", "widht": 5}}, r"^camera\.widht: unknown key"),
        ({"camera": {"type": "webcam"}}, r"^camera\.type: unknown type 'webcam'; one of synthetic, folder, opencv$"),
        ({"camera": {"seed": 1}}, r"^camera\.type: required key is missing"),
        ({"camera": {"type": "folder"}}, r"^camera\.path: required key is missing"),
        ({"camera": {"type": "synthetic", "width": -3}}, r"^camera\.width: must be >= 32, got -3$"),
        ({"camera": {"type": "opencv", "source": 0, "height": 0}}, r"^camera\.height: must be >= 16, got 0$"),
        ({"model": {"threads": "two"}}, r"^model\.threads: expected an integer, got str 'two'"),
        ({"model": {"providers": ["cpu", "gpu"]}}, r"^model\.providers\[1\]: must be one of tensorrt"),
        ({"model": {"warmup": "yes"}}, r"^model\.warmup: expected true or false"),
        ({"quality": {"min_brightness": 250, "max_brightness": 200}}, r"^quality\.min_brightness: need 0 <="),
        ({"trigger": {"type": "interval", "seconds": 0}}, r"^trigger\.seconds: must be >= 0\.01, got 0$"),
        ({"trigger": {"type": "bridge", "bridge": {"type": "serial", "prot": "x"}}}, r"^trigger\.bridge\.prot: unknown key"),
        ({"publisher": {"type": "mqtt"}}, r"^publisher\.host: required key is missing"),
        ({"publisher": {"type": "mqtt", "host": "b", "ca_file": "ca.pem"}}, r"^publisher\.ca_file: TLS needs"),
        ({"sample": {"labs": {"fpg_mmol_l": [7]}}}, r"^sample\.labs\.fpg_mmol_l: expected a number or text"),
        ({"sample": {"sample_id": "S", "worklist": "w.csv"}}, r"^sample\.worklist: give either"),
        ({"device_id": "scope 01"}, r"^device_id: use 1-64 letters"),
        ({"um_per_px": 0}, r"^um_per_px: must be a positive finite number of µm per pixel, got 0\.0$"),
        ({"diagnosis": {"guideline": "idf"}}, r"^diagnosis\.guideline: must be one of who, ada, nice"),
        ([1, 2], r"^\(top level\): expected a mapping"),
        # every numeric setting has a range: what `config check` refuses, `run` never sees
        ({"model": {"threads": 100000}}, r"^model\.threads: must be <= 64, got 100000$"),
        ({"camera": {"type": "synthetic", "width": 100000}}, r"^camera\.width: must be <= 4096"),
        ({"camera": {"type": "opencv", "source": 0, "reconnect_interval_s": 0}}, r"^camera\.reconnect_interval_s: must be >= 0\.01"),
        ({"camera": {"type": "opencv", "source": [0]}}, r"^camera\.source: expected an integer or text, got list \[0\]$"),
        ({"publisher": {"type": "mqtt", "host": "b", "keepalive_s": 0}}, r"^publisher\.keepalive_s: must be >= 5, got 0$"),
        ({"publisher": {"type": "mqtt", "host": "b", "port": 70000}}, r"^publisher\.port: must be <= 65535"),
        ({"publisher": {"type": "mqtt", "host": "b", "session_expiry_s": 0}}, r"^publisher\.session_expiry_s: must be >= 1"),
        ({"trigger": {"type": "bridge", "bridge": {"type": "usb"}}}, r"^trigger\.bridge\.type: must be one of serial, gpio, simulator; got 'usb'$"),
        ({"trigger": {"type": "bridge", "bridge": {"type": "serial", "ack_timeout": 0}}},
         r"^trigger\.bridge\.ack_timeout: must be > 0"),
        ({"trigger": {"type": "bridge", "bridge": {"type": "simulator", "serial": {"heartbeat_interval": 0}}}},
         r"^trigger\.bridge\.serial\.heartbeat_interval: must be > 0"),
        ({"trigger": {"type": "bridge", "bridge": {"type": "gpio", "button_line": 5000}}},
         r"^trigger\.bridge\.button_line: must be <= 1023"),
        ({"sample": {"fields_per_sample": 0}}, r"^sample\.fields_per_sample: must be >= 1, got 0$"),
        ({"quality": {"max_clipped_fraction": 0}}, r"^quality\.max_clipped_fraction: must be > 0"),
        ({"model": {"threads": 2.0}}, r"^model\.threads: expected an integer, got float 2\.0$"),
        ({"model": {"threads": True}}, r"^model\.threads: expected an integer, got bool True$"),
    ],
)
def test_bad_values_name_the_key_path(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_file_errors_name_the_file(tmp_path):
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("camera: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(bad_yaml)
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file does not exist$"):
        load_config(tmp_path / "missing.yaml")
    unknown = tmp_path / "device.yaml"
    unknown.write_text("quality:\n  min_focuss: 3\n")
    with pytest.raises(ConfigError, match=r"device\.yaml: quality\.min_focuss: unknown key"):
        load_config(unknown)


def _smearscope(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smearscope", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_config_check_cli(tmp_path):
    good = _smearscope("config", "check", str(REPO / "runtime" / "device" / "examples" / "pi.yaml"), "--show")
    assert good.returncode == 0, good.stderr
    assert "valid" in good.stdout and "camera:" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        camera:
          type: opencv
          source: 0
          fps: 30
    """))
    result = _smearscope("config", "check", str(bad))
    assert result.returncode == 2
    assert "camera.fps: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_errors_are_one_line_and_count_the_rest():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"model": {"threads": -1, "warmup": "no"}, "camra": 1})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("model.threads: must be >= 0, got -1") and message.endswith("(and 2 more problems)")


def test_examples_travel_with_the_package_and_check_outside_the_repository(tmp_path):
    """`config example NAME` prints the installed file; the printed text checks clean anywhere."""
    for name in ("default", "pi", "jetson"):
        shown = _smearscope("config", "example", name, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        target = tmp_path / f"{name}.yaml"
        target.write_text(shown.stdout)
        assert config_from_dict(__import__("yaml").safe_load(shown.stdout)) == load_config(target)
        checked = _smearscope("config", "check", str(target), cwd=tmp_path)
        assert checked.returncode == 0 and "valid" in checked.stdout, checked.stderr
    unknown = _smearscope("config", "example", "pdp11", cwd=tmp_path)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr


def test_schema_lists_every_section_and_its_ranges(tmp_path):
    import json

    device = json.loads(_smearscope("config", "schema", cwd=tmp_path).stdout)
    assert device["additionalProperties"] is False
    assert set(device["properties"]) == set(DeviceConfig.model_fields)
    defs = device["$defs"]
    assert defs["SyntheticCameraConfig"]["properties"]["width"]["minimum"] == 32
    assert defs["ModelConfig"]["properties"]["threads"]["maximum"] == 64
    assert set(device["properties"]["camera"]["discriminator"]["mapping"]) == {"synthetic", "folder", "opencv"}
    server = json.loads(_smearscope("config", "schema", "--server", cwd=tmp_path).stdout)
    assert server["$defs"]["BrokerConfig"]["properties"]["keepalive_s"]["minimum"] == 5
    assert server["$defs"]["BrokerConfig"]["additionalProperties"] is False


def test_config_check_server_file(tmp_path):
    good = tmp_path / "server.yaml"
    good.write_text("broker: {host: mqtt.example, port: 8883, keepalive_s: 60}\ndatabase: sqlite:///s.db\n")
    result = _smearscope("config", "check", "--server", str(good))
    assert result.returncode == 0 and "valid (server" in result.stdout, result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("broker: {host: mqtt.example, keepalive_s: 'often'}\n")
    result = _smearscope("config", "check", "--server", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}: broker.keepalive_s: expected an integer, got str 'often'"
