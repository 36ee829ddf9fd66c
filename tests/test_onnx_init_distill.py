"""Fine-tuning from an exported model (training.onnx_init) and distillation (training.distill)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.card import CardContent, write_card
from export.onnx_export import export_segmentation
from runtime.contracts.errors import ConfigError, ModelError
from runtime.inference.preprocess import PreprocessParams
from training.distill import OnnxTeacher, distillation_loss
from training.loop import TrainConfig, TrainingRun, train_segmentation
from training.onnx_init import init_payload, model_from_onnx
from training.unet import build_model

torch.set_num_threads(1)
PARAMS = PreprocessParams(target_rbc_diameter_px=24.0)
SPEC = {"name": "lite_unet", "kwargs": {"base_width": 4, "depth": 2, "centre_head": True}}


def _exported(tmp_path: Path, spec: dict = SPEC, params: PreprocessParams = PARAMS) -> tuple[torch.nn.Module, Path]:
    """A small lite network with non-trivial normalisation statistics, exported with its card."""
    torch.manual_seed(0)
    model = build_model(spec["name"], **spec["kwargs"])
    model.train()
    with torch.no_grad():  # a few forward passes in train mode move the running statistics off 0/1
        for _ in range(3):
            model(torch.randn(2, 3, 32, 32) * 2 + 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model.eval()
    path = export_segmentation(model, params, tmp_path / "seg.fp32.onnx")
    write_card(path, CardContent(name="seg", version="0", task="segmentation", preprocess=params, quantization=None,
                                 training_data={}, metrics={}, extra={"architecture": {"name": spec["name"], **spec["kwargs"]}}))
    return model, path


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def test_rebuilt_model_equals_the_export_before_and_after_recalibration(tmp_path):
    original, path = _exported(tmp_path)
    x = np.random.default_rng(1).normal(0, 1, (2, 3, 48, 64)).astype(np.float32)
    reference = _run(path, x)
    rebuilt, spec = model_from_onnx(path)
    assert spec == SPEC
    with torch.no_grad():
        for ref, out in zip(reference, rebuilt(torch.from_numpy(x))):
            assert np.abs(ref - out.numpy()).max() < 1e-4
    payload = init_payload(path, [torch.from_numpy(x)])
    tuned = build_model(SPEC["name"], **SPEC["kwargs"])
    tuned.load_state_dict(payload["state_dict"])
    norms = [m for m in tuned.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert any(float(n.running_mean.abs().max()) > 1e-3 for n in norms)  # statistics were measured, not left at 0
    with torch.no_grad():
        for ref, out in zip(reference, tuned.eval()(torch.from_numpy(x))):
            assert np.abs(ref - out.numpy()).max() < 1e-3
        tuned.train()  # batch statistics are the measured ones: train mode gives the same function
        for ref, out in zip(reference, tuned(torch.from_numpy(x))):
            assert np.abs(ref - out.numpy()).max() < 1e-2
    assert payload["init"]["file"] == "seg.fp32.onnx" and len(payload["init"]["sha256"]) == 64


def test_a_foreign_architecture_is_refused(tmp_path):
    _, path = _exported(tmp_path)
    write_card(path, CardContent(name="seg", version="0", task="segmentation", preprocess=PARAMS, quantization=None,
                                 training_data={}, metrics={}, extra={"architecture": {"name": "lite_unet", "base_width": 8,
                                                                                       "depth": 2, "centre_head": True}}))
    with pytest.raises(ModelError, match="does not fit|do not match"):
        model_from_onnx(path)


def test_distillation_loss_is_zero_only_for_the_teachers_own_probabilities():
    logits = torch.randn(2, 4, 8, 8)
    assert float(distillation_loss(logits, logits.softmax(1))) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(torch.zeros_like(logits), logits.softmax(1))) > 0.01


class _Crops:
    def __init__(self) -> None:
        self.calls = 0

    def batch(self, rng: np.random.Generator, size: int):
        self.calls += 1
        image = torch.from_numpy(rng.normal(0, 1, (size, 3, 32, 32)).astype(np.float32))
        return image, torch.from_numpy(rng.integers(0, 4, (size, 32, 32))), None

    def describe(self) -> dict:
        return {"name": "noise"}


def test_fine_tune_from_an_export_with_a_teacher_records_both(tmp_path):
    _, student = _exported(tmp_path / "s")
    _, teacher_path = _exported(tmp_path / "t", {"name": "unet", "kwargs": {"base_width": 4, "depth": 2, "centre_head": True}})
    teacher = OnnxTeacher(teacher_path, PARAMS, threads=1)
    assert teacher(torch.zeros(1, 3, 32, 32)).sum(1).sub(1).abs().max() < 1e-5
    val = [{"image": torch.zeros(3, 32, 32), "mask": torch.zeros(32, 32, dtype=torch.int64)}]
    result = train_segmentation(SPEC, PARAMS, _Crops(), val, TrainConfig(steps=2, val_every_steps=2, threads=1),
                                TrainingRun(tmp_path / "run", init=student, teacher=teacher, log=lambda _: None))
    raw = torch.load(result.last, weights_only=True)
    assert raw["init"]["file"] == "seg.fp32.onnx" and raw["teacher"]["file"] == "seg.fp32.onnx"
    with pytest.raises(ConfigError, match="preprocessing differs"):
        OnnxTeacher(teacher_path, PreprocessParams(target_rbc_diameter_px=30.0))
