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
EXAMPLES = sorted((REPO / "configs").glob("*.yaml"))


def test_examples_exist_and_are_valid():
    names = {p.name for p in EXAMPLES}
    assert {"device.example.yaml", "raspberry-pi.yaml", "jetson.yaml"} <= names
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
        ({"camera": {"type": "webcam"}}, r"^camera\.type: unknown type 'webcam'; one of synthetic, folder, opencv"),
        ({"camera": {"seed": 1}}, r"^camera\.type: required key is missing"),
        ({"camera": {"type": "folder"}}, r"^camera\.path: required key is missing"),
        ({"camera": {"type": "synthetic", "width": -3}}, r"^camera\.width: must be at least 32 px, got -3"),
        ({"camera": {"type": "opencv", "source": 0, "height": 0}}, r"^camera\.height: must be a positive integer"),
        ({"model": {"threads": "two"}}, r"^model\.threads: expected an integer, got str 'two'"),
        ({"model": {"providers": ["cpu", "gpu"]}}, r"^model\.providers\[1\]: must be one of tensorrt"),
        ({"model": {"warmup": "yes"}}, r"^model\.warmup: expected true or false"),
        ({"quality": {"min_brightness": 250, "max_brightness": 200}}, r"^quality\.min_brightness: need 0 <="),
        ({"trigger": {"type": "interval", "seconds": 0}}, r"^trigger\.seconds: must be positive"),
        ({"trigger": {"type": "bridge", "bridge": {"type": "serial", "prot": "x"}}}, r"^trigger\.bridge\.prot: unknown key"),
        ({"publisher": {"type": "mqtt"}}, r"^publisher\.host: required key is missing"),
        ({"publisher": {"type": "mqtt", "host": "b", "ca_file": "ca.pem"}}, r"^publisher\.ca_file: TLS needs"),
        ({"sample": {"labs": {"fpg_mmol_l": [7]}}}, r"^sample\.labs\.fpg_mmol_l: expected a number or text"),
        ({"sample": {"sample_id": "S", "worklist": "w.csv"}}, r"^sample\.worklist: give either"),
        ({"device_id": "scope 01"}, r"^device_id: use 1-64 letters"),
        ({"um_per_px": 0}, r"^um_per_px: must be positive"),
        ({"diagnosis": {"guideline": "idf"}}, r"^diagnosis\.guideline: must be one of who, ada, nice"),
        ([1, 2], r"^\(top level\): expected a mapping"),
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
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file does not exist"):
        load_config(tmp_path / "missing.yaml")
    unknown = tmp_path / "device.yaml"
    unknown.write_text("quality:\n  min_focuss: 3\n")
    with pytest.raises(ConfigError, match=r"device\.yaml: quality\.min_focuss: unknown key"):
        load_config(unknown)


def _smearscope(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smearscope", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_config_check_cli(tmp_path):
    good = _smearscope("config", "check", str(REPO / "configs" / "raspberry-pi.yaml"), "--show")
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
