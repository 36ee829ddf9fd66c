"""The import rules of docs/architecture.md: the folders are the architecture, arrows the only imports.

Every `import` statement counts, also those inside functions (lazy imports are still dependencies).
The test also checks that no module of the product implements an MQTT broker, that torch, onnx
and onnxsim stay in the workstation packages, and that the path from `smearscope analyze` to
ONNX Runtime stays short.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OURS = ("runtime", "server", "training", "export", "benchmarks", "smearscope", "firmware_bridge")
STAGES = ("contracts", "capture", "inference", "analysis", "diagnosis", "delivery", "device")

ALLOWED: dict[str, set[str]] = {
    "firmware_bridge": set(),
    "runtime.contracts": {"firmware_bridge"},  # the device config's bridge section, until it moves to capture
    "runtime.capture": {"runtime.contracts", "firmware_bridge"},
    "runtime.inference": {"runtime.contracts"},
    "runtime.analysis": {"runtime.inference", "runtime.contracts"},
    "runtime.diagnosis": {"runtime.contracts", "runtime.inference"},
    "runtime.delivery": {"runtime.contracts"},
    "runtime.device": {f"runtime.{s}" for s in STAGES} | {"firmware_bridge"},
    "training": {f"runtime.{s}" for s in STAGES},
    "export": {"training"} | {f"runtime.{s}" for s in STAGES},
    "server": {"runtime.contracts", "runtime.delivery", "runtime.analysis", "runtime.diagnosis"},
    "benchmarks": {"server", "export", "training"} | {f"runtime.{s}" for s in STAGES},
    "smearscope": {"runtime", "server", "training", "export", "benchmarks", "firmware_bridge"}
    | {f"runtime.{s}" for s in STAGES},
}
"""Unit -> the units it may import (besides itself)."""

WORKSTATION_ONLY = {"torch", "onnx", "onnxsim"}
WORKSTATION_UNITS = {"training", "export", "benchmarks"}
"""torch/onnx/onnxsim only there (benchmarks: the PyTorch baseline and graph inspection, lazily)."""


def unit_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "runtime" and len(parts) > 1 and parts[1] in STAGES:
        return f"runtime.{parts[1]}"
    return parts[0]


def product_modules() -> list[tuple[str, Path]]:
    out = []
    for top in OURS:
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO)
            if "firmware" in rel.parts[1:2]:  # MicroPython firmware for the controller board, not host code
                continue
            out.append((".".join(rel.with_suffix("").parts).removesuffix(".__init__"), path))
    return out


def imports_of(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def violations() -> list[str]:
    bad = []
    for module, path in product_modules():
        source = unit_of(module)
        for name, line in imports_of(path):
            top = name.split(".")[0]
            where = f"{path.relative_to(REPO)}:{line}"
            if top in WORKSTATION_ONLY and source not in WORKSTATION_UNITS:
                bad.append(f"{where}: {source} imports {top} (workstation only)")
            if top not in OURS:
                continue
            target = unit_of(name)
            if target == "runtime" and name != "runtime":
                target = name  # runtime.<not a stage>: there is no such package any more
            if target != source and target not in ALLOWED[source]:
                bad.append(f"{where}: {source} may not import {name}")
    return bad


def test_every_import_follows_the_layout() -> None:
    assert violations() == []


def test_runtime_has_only_the_stage_packages() -> None:
    entries = {p.name for p in (REPO / "runtime").iterdir() if p.name not in ("__pycache__",)}
    assert entries == {"__init__.py", *STAGES}


def test_the_rules_catch_a_bad_import(tmp_path: Path) -> None:
    """The checker itself: a delivery module importing the analysis stage is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from runtime.analysis.counting import count_cells\nimport torch\n")
    names = [name for name, _ in imports_of(bad)]
    assert names == ["runtime.analysis.counting", "torch"]
    assert unit_of(names[0]) not in ALLOWED["runtime.delivery"]


def test_no_broker_is_implemented_in_the_product() -> None:
    """Only MQTT clients (paho) and the Mosquitto launcher: no socket server speaking MQTT."""
    for module, path in product_modules():
        text = path.read_text()
        if module.startswith(("runtime", "server")) and ("asyncio.start_server" in text or "socketserver" in text):
            pytest.fail(f"{path.relative_to(REPO)} opens a server socket")
    assert not (REPO / "runtime" / "delivery" / "broker.py").exists()


def test_from_analyze_to_onnx_runtime_in_six_calls() -> None:
    """smearscope analyze -> Analyzer.analyze -> Analyzer.infer -> search_scale -> Network.predict ->
    SegmentationModel.run -> InferenceSession.run, each in a module the path has not yet left."""
    chain = [
        ("smearscope/cli/analyze.py", ".analyze("),
        ("runtime/analysis/analyzer.py", "self.infer("),
        ("runtime/analysis/analyzer.py", "search_scale("),
        ("runtime/analysis/scale_search.py", "network.predict("),
        ("runtime/inference/passes.py", "self.run("),
        ("runtime/inference/model.py", "self.loaded.session.run("),
    ]
    for path, call in chain:
        assert call in (REPO / path).read_text(), f"{path} no longer calls {call}"
    modules = [path for path, _ in chain]
    left = []
    for path in modules:  # never back to a module already left
        assert path not in left[:-1] or path == left[-1], modules
        if not left or left[-1] != path:
            left.append(path)
    assert len(chain) <= 6
