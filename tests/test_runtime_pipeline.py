"""Frame -> quality -> preprocess -> ONNX Runtime -> mask/counts -> result/1, with a real trained model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from _device_model import UM_PER_PX, trained_model_path
from runtime.analysis.analyzer import Analyzer, derived_estimates
from runtime.contracts.errors import ModelError, ModelIntegrityError
from runtime.contracts.modelcard import card_path_for
from runtime.inference.session import SessionOptions
from runtime.analysis.scale_search import analyse_frame
from runtime.analysis.result import build_result
from runtime.contracts.sample import SampleContext, SampleField
from runtime.contracts.schema import validate
from runtime.inference.model import SegmentationModel
from runtime.capture.synthetic import generate_smear


@pytest.fixture(scope="session")
def model_path():
    return trained_model_path()


@pytest.fixture(scope="session")
def analyzer(model_path):
    return Analyzer(SegmentationModel.load(model_path, SessionOptions(providers=("cpu",), intra_op_threads=2)))


def test_mask_maps_to_frame_size_and_matches_the_truth(analyzer):
    smear = generate_smear(101, height=301, width=397, um_per_px=UM_PER_PX)  # odd size: padding and cropping
    analysis = analyzer.analyze(smear.image, um_per_px=UM_PER_PX)
    assert analysis.mask.shape == analysis.segmentation.geometry.resized_hw and analysis.mask.dtype == np.uint8
    frame_mask = analysis.frame_mask()
    assert frame_mask.shape == smear.image.shape[:2] and frame_mask.dtype == np.uint8
    assert analysis.quality.accepted and analysis.model_ran
    agreement = float(np.mean(frame_mask == smear.mask))
    assert agreement > 0.9, agreement  # a misplaced or mis-scaled mask falls far below this
    assert abs(analysis.area_pct["rbc"] - smear.area_pct["rbc"]) < 5.0
    assert abs(analysis.counts["rbc"] - smear.counts["rbc"]) <= 0.25 * smear.counts["rbc"]
    assert set(analysis.timings_ms) == {"quality", "preprocess", "inference", "postprocess", "total"}
    assert analysis.timings_ms["total"] >= analysis.timings_ms["inference"] > 0


def test_stages_are_separately_callable(analyzer):
    frame = generate_smear(5, 160, 200, UM_PER_PX).image
    report, scale = analyzer.check_quality(frame, UM_PER_PX)
    prepared = analyzer.preprocess(frame, scale)
    passes = analyzer.infer(prepared, frame)
    seg, found, area = analyzer.postprocess(passes, UM_PER_PX)
    whole = analyzer.analyze(frame, um_per_px=UM_PER_PX)
    assert report.accepted and len(passes) == 1 and passes[0].logits.shape[0] == 4  # calibrated: one pass
    assert np.array_equal(seg.mask, whole.mask) and found.cells.counts == whole.counts and area == whole.area_pct
    assert found.cells.ordered() == whole.cells.ordered()
    assert seg.scale == whole.scale == scale


@pytest.mark.parametrize("um_per_px", [UM_PER_PX, None])
def test_analyzer_is_analyse_frame(analyzer, um_per_px):
    """The device's stages and the evaluated path (runtime.analysis.scale_search.analyse_frame) are one."""
    frame = generate_smear(21, 220, 260, UM_PER_PX).image
    whole = analyzer.analyze(frame, um_per_px=um_per_px)
    seg, counts = analyse_frame(analyzer.model, frame, um_per_px)
    assert whole.model_ran and whole.counts == counts
    assert np.array_equal(whole.mask, seg.mask) and whole.scale == seg.scale
    assert whole.quality_dict()["scale"]["source"] == seg.scale.source


def test_result_message_validates_and_carries_derived_estimates(analyzer):
    frame = generate_smear(9, 200, 240, UM_PER_PX).image
    placed = SampleField(SampleContext("S-9", "p-abc", {"fpg_mmol_l": 6.2}, 2), 1)
    calibrated = analyzer.analyze(frame, um_per_px=UM_PER_PX, sample=placed)
    message = build_result(calibrated, device_id="scope-01", seq=3, sample=placed,
                           model=analyzer.model.info(), extra_timings_ms={"capture": 1.5})
    validate(message)
    assert message["seq"] == 3 and message["sample"]["field_index"] == 1
    assert message["model"]["sha256"] == analyzer.model.card.sha256
    assert message["timings_ms"]["capture"] == 1.5
    derived = message["derived"]
    field_mm2 = 200 * 240 * UM_PER_PX**2 / 1e6
    assert derived["field_area_mm2"] == pytest.approx(field_mm2, rel=1e-3)
    assert derived["density_per_mm2"]["rbc"] == pytest.approx(message["counts"]["rbc"] / field_mm2, rel=1e-2)
    json.dumps(message)  # plain JSON types only
    uncalibrated = analyzer.analyze(frame)
    assert derived_estimates(uncalibrated.mask, uncalibrated.counts, None) is None
    assert uncalibrated.quality_dict()["scale"]["source"] == "estimated"


@pytest.mark.parametrize("kind", ["blank", "overexposed"])
def test_rejected_frames_give_empty_counts_and_reasons(analyzer, kind):
    frame = np.full((240, 320, 3), 226 if kind == "blank" else 255, np.uint8)
    analysis = analyzer.analyze(frame)
    assert not analysis.quality.accepted and analysis.quality.reasons
    assert analysis.counts == {"rbc": 0, "wbc": 0, "platelet": 0}
    assert analysis.area_pct["background"] == 100.0
    assert "inference" not in analysis.timings_ms and not analysis.model_ran
    placed = SampleField(SampleContext("S-1"), 0)
    validate(build_result(analysis, device_id="d", seq=0, sample=placed, model=analyzer.model.info()))


def test_model_with_changed_bytes_is_refused(model_path, tmp_path):
    copy = tmp_path / model_path.name
    shutil.copy(model_path, copy)
    shutil.copy(card_path_for(model_path), card_path_for(copy))
    with open(copy, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelIntegrityError, match=rf"{copy.name}: sha256 .* does not match its card"):
        SegmentationModel.load(copy)


def test_card_without_preprocess_is_refused(model_path, tmp_path):
    copy = tmp_path / model_path.name
    shutil.copy(model_path, copy)
    card = json.loads(card_path_for(model_path).read_text())
    card["preprocess"] = None
    card_path_for(copy).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="no preprocess parameters"):
        SegmentationModel.load(copy)
