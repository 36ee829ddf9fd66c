"""The shipped segmentation models: integrity, size, outputs, card metrics, and a live check on real smears."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.contracts.modelcard import card_path_for, load_card
from runtime.inference.session import SessionOptions, load_model
from runtime.analysis.scale_search import analyse_frame, count_segmentation, segment_frame
from runtime.inference.passes import FunctionNetwork
from runtime.inference.preprocess import preprocess
from training.labels import boxes_to_mask, dice_per_class
from training.txl_pbc import count_boxes, list_samples, load_sample

NAMES = ("segmentation.fp32.onnx", "segmentation.int8.onnx")


@pytest.fixture(scope="module")
def models(repo_root):
    paths = {name: repo_root / "models" / name for name in NAMES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    assert not missing, f"shipped models missing: {missing}"
    return {name: load_model(path, SessionOptions(intra_op_threads=2, warmup=False)) for name, path in paths.items()}


def test_models_match_their_cards_and_stay_small(repo_root, models):
    for name in NAMES:
        path = repo_root / "models" / name
        card = load_card(path)  # raises on a sha256 mismatch
        assert card.preprocess is not None and card.classes == ["background", "rbc", "wbc", "platelet"]
        assert card.output_names == ["logits", "centres"]
    assert (repo_root / "models" / NAMES[1]).stat().st_size < 5_000_000
    assert (repo_root / "models" / NAMES[0]).stat().st_size < 12_000_000


def test_cards_hold_the_val_evaluation_and_consistent_int8_deltas(repo_root):
    cards = {name: json.loads(card_path_for(repo_root / "models" / name).read_text()) for name in NAMES}
    fp32 = cards[NAMES[0]]["metrics"]["txl_pbc_evaluation"]
    int8 = cards[NAMES[1]]["metrics"]["txl_pbc_evaluation"]
    for section in (fp32, int8):
        assert section["data"]["split"] == "val" and section["data"]["images"] == 288
        for key in ("rbc_count_mape_pct", "wbc_count_exact_pct", "platelet_count_mae"):
            assert section["all"][key] is not None
        assert set(section["classical_baseline"]["dice"]) == {"background", "rbc", "wbc", "platelet"}
    for cls, change in int8["change_from_fp32"]["dice"].items():
        assert change == pytest.approx(int8["all"]["dice"][cls] - fp32["all"]["dice"][cls], abs=1e-3)


def test_int8_model_segments_and_counts_real_smears(shared_data, models):
    loaded = models[NAMES[1]]
    fp32 = models[NAMES[0]]
    params = loaded.card.preprocess
    samples = list_samples(shared_data / "txl_pbc", "val")[::100]
    for sample in samples:
        image, boxes = load_sample(sample)
        seg = segment_frame(FunctionNetwork(lambda x: loaded.run({"image": x}), params), image)
        dice = dice_per_class(seg.frame_mask(), boxes_to_mask(boxes, image.shape[:2]))
        assert dice[1] > 0.8 and dice[2] > 0.8, (sample.stem, dice)
        counts = count_segmentation(seg)
        truth = count_boxes(boxes)
        assert abs(counts["rbc"] - truth["rbc"]) <= max(2, 0.25 * truth["rbc"]), (sample.stem, counts, truth)
        tensor = preprocess(image, params, scale=seg.scale).tensor  # same input for both models
        q, f = (m.run({"image": tensor})["logits"][0].argmax(0) for m in (loaded, fp32))
        agreement = dice_per_class(q, f)
        assert min(agreement[:3]) > 0.95, agreement


def test_default_device_model_is_the_shipped_int8():
    from runtime.inference.model import SegmentationModel

    model = SegmentationModel.load()
    assert model.path.name == NAMES[1]
    assert model.params.target_rbc_diameter_px > 0


@pytest.fixture(scope="module")
def shipped_analyzer(repo_root):
    from runtime.analysis.analyzer import Analyzer
    from runtime.inference.model import SegmentationModel

    path = repo_root / "models" / NAMES[1]
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return Analyzer(SegmentationModel.load(path, SessionOptions(intra_op_threads=2, warmup=False)))


def _agree(analyzer, image, um_per_px=None):
    whole = analyzer.analyze(image, um_per_px=um_per_px)
    seg, counts = analyse_frame(analyzer.model, image, um_per_px)
    assert whole.model_ran
    assert whole.counts == counts, (whole.counts, counts)
    assert np.array_equal(whole.mask, seg.mask) and whole.scale == seg.scale
    return seg


def test_device_analyzer_counts_as_evaluated_on_a_synthetic_smear(shipped_analyzer):
    """Analyzer (smearscope analyze/run/demo) and analyse_frame (smearscope evaluate) with the
    centre head: same mask, scale and counts, calibrated or not."""
    from runtime.capture.synthetic import generate_smear

    image = generate_smear(7, 300, 360, 0.25).image
    _agree(shipped_analyzer, image, 0.25)
    assert _agree(shipped_analyzer, image).centres is not None


def test_device_analyzer_counts_as_evaluated_on_real_smears(shared_data, shipped_analyzer):
    for sample in list_samples(shared_data / "txl_pbc", "val")[::150]:
        image, _ = load_sample(sample)
        seg = _agree(shipped_analyzer, image)
        assert seg.centres is not None and seg.passes >= 2  # uncalibrated: the scale search ran


def test_device_analyzer_counts_as_evaluated_on_the_bundled_real_frames(shipped_analyzer):
    """The same agreement on real frames that ship with the package (no full data set needed)."""
    from runtime.capture.bundled import bundled_frames, bundled_um_per_px

    for frame in bundled_frames()[::4]:
        image = frame.load()
        seg = _agree(shipped_analyzer, image)
        assert seg.centres is not None and seg.passes >= 2  # uncalibrated: the scale search ran
        plan = shipped_analyzer.model.plan  # calibrated: one pass, flip-averaged (3 runs) if the plan says so
        runs = 3 if plan.flip_average and plan.flip_when_calibrated else 1
        assert _agree(shipped_analyzer, image, bundled_um_per_px()).passes == runs
