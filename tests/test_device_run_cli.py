"""`smearscope run`: command-line sample options override the config; bad configs are one clear line."""

from __future__ import annotations

import json
import textwrap

from _device_model import trained_model_path
from smearscope.cli import cli


def _config(tmp_path, extra: str = "") -> str:
    path = tmp_path / "device.yaml"
    path.write_text(textwrap.dedent(f"""
        device_id: scope-cli
        model: {{path: {trained_model_path()}, providers: [cpu], threads: 2}}
        camera: {{type: synthetic, width: 224, height: 160}}
        trigger: {{type: interval, seconds: 0.01, count: 3}}
        publisher: {{type: file, dir: {tmp_path / 'results'}}}
        sample: {{sample_id: FROM-CONFIG, labs: {{age: 50}}}}
    """) + extra)
    return str(path)


def test_sample_options_override_the_config(cli_runner, tmp_path):
    result = cli_runner.invoke(cli, ["run", "--config", _config(tmp_path), "--sample-id", "S-CLI", "--patient-id",
                                     "p-cli", "--lab", "fpg_mmol_l=7.1", "--fields", "2"])
    assert result.exit_code == 0, result.output
    results = sorted((json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")),
                     key=lambda m: m["seq"])
    assert [(m["sample"]["sample_id"], m["sample"]["field_index"]) for m in results] == [
        ("S-CLI", 0), ("S-CLI", 1), ("S-CLI", 2)]
    assert results[0]["sample"]["labs"] == {"age": 50, "fpg_mmol_l": 7.1}
    assert results[0]["sample"]["patient_id"] == "p-cli"
    assert "sample S-CLI: 3/3 fields accepted" in result.output


def test_worklist_option(cli_runner, tmp_path):
    worklist = tmp_path / "worklist.csv"
    worklist.write_text("sample_id,fields,hba1c_pct\nW-1,1,6.8\nW-2,2,5.1\n")
    result = cli_runner.invoke(cli, ["run", "--config", _config(tmp_path), "--worklist", str(worklist)])
    assert result.exit_code == 0, result.output
    results = sorted((json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")),
                     key=lambda m: m["seq"])
    assert [m["sample"]["sample_id"] for m in results] == ["W-1", "W-2", "W-2"]
    assert results[0]["sample"]["labs"] == {"hba1c_pct": 6.8}


def test_bad_config_and_bad_option_are_one_line(cli_runner, tmp_path):
    result = cli_runner.invoke(cli, ["run", "--config", _config(tmp_path, "quality: {min_focus: -1}\n")])
    assert result.exit_code == 2 and "quality.min_focus: must be >= 0" in result.output  # 2: config
    assert result.exception is None or isinstance(result.exception, SystemExit)
    result = cli_runner.invoke(cli, ["run", "--config", _config(tmp_path), "--lab", "fpg"])
    assert result.exit_code == 2 and "--lab 'fpg': expected NAME=VALUE" in result.output
