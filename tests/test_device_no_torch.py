"""`smearscope run` and `smearscope analyze` do their whole job without importing torch (or onnx tooling)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import pytest

from _device_model import UM_PER_PX, trained_model_path
from runtime.capture.synthetic import generate_smear

WORKSTATION_ONLY = ("torch", "onnx", "onnxsim", "onnxscript", "training", "export")

PROBE = textwrap.dedent("""
    import sys
    from smearscope.cli import main
    sys.argv = ["smearscope", *{args!r}]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
    print("WORKSTATION_MODULES=" + ",".join(loaded))
    print("ONNXRUNTIME_LOADED=" + str("onnxruntime" in sys.modules))
    sys.exit(code)
""")


@pytest.fixture(scope="session")
def model_path():
    return trained_model_path()


def _probe(args: list[str], cwd) -> subprocess.CompletedProcess:
    script = PROBE.format(args=args, forbidden=WORKSTATION_ONLY)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, timeout=300)


def _modules(stdout: str) -> tuple[str, str]:
    lines = dict(line.split("=", 1) for line in stdout.splitlines()
                 if line.startswith(("WORKSTATION_MODULES=", "ONNXRUNTIME_LOADED=")))
    return lines["WORKSTATION_MODULES"], lines["ONNXRUNTIME_LOADED"]


def test_analyze_never_imports_torch(model_path, tmp_path):
    image = tmp_path / "field.png"
    cv2.imwrite(str(image), generate_smear(4, 160, 200, UM_PER_PX).image)
    result = _probe(["analyze", str(image), "--model", str(model_path), "--out", str(tmp_path / "out")], tmp_path)
    assert result.returncode == 0, result.stderr
    workstation, ort_loaded = _modules(result.stdout)
    assert workstation == "", f"analyze imported {workstation}"
    assert ort_loaded == "True"  # the probe really ran an analysis
    assert json.loads((tmp_path / "out" / "field.json").read_text())["counts"]["rbc"] > 0


def test_run_never_imports_torch(model_path, tmp_path):
    config = tmp_path / "device.yaml"
    config.write_text(textwrap.dedent(f"""
        device_id: scope-probe
        model: {{path: {model_path}, threads: 1}}
        camera: {{type: synthetic, width: 200, height: 160}}
        trigger: {{type: interval, seconds: 0.01, count: 2}}
        publisher: {{type: file, dir: {tmp_path / 'results'}}}
        sample: {{sample_id: S-1, labs: {{fpg_mmol_l: 6.4, hba1c_pct: 6.2}}}}
        output: {{overlays_dir: {tmp_path / 'overlays'}}}
    """))
    result = _probe(["run", "--config", str(config)], tmp_path)
    assert result.returncode == 0, result.stderr
    workstation, ort_loaded = _modules(result.stdout)
    assert workstation == "", f"run imported {workstation}"
    assert ort_loaded == "True"
    results = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    assert len(results) == 2
    assert all(r["diagnosis"]["status"] == "prediabetes" for r in results)
    assert len(list((tmp_path / "overlays").glob("*.overlay.png"))) == 2
