"""The evaluation report: metrics on known answers, the baseline, the label checks, the CLI."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from runtime.contracts.classes import RBC
from runtime.analysis.cells import Cell
from runtime.contracts.classes import CELL_CLASSES
from training.evaluate import Method, Output, evaluate, format_report
from training.objects import average_precision, iou_matrix, match
from training.label_checks import check_image
from training.labels import boxes_to_mask
from training.txl_pbc import Box, list_samples, load_sample


def _truth_lookup(root, split, limit):
    table = {}
    for sample in list_samples(root, split)[:: 288 // limit][:limit]:
        image, boxes = load_sample(sample)
        table[hashlib.sha1(image.tobytes()).hexdigest()] = boxes
    return table


def test_perfect_and_empty_methods_score_as_expected(shared_data):
    root = shared_data / "txl_pbc"
    truth = _truth_lookup(root, "val", 4)

    def perfect(frame):
        boxes = truth[hashlib.sha1(frame.tobytes()).hexdigest()]
        return Output(boxes_to_mask(boxes, frame.shape[:2]), _cells_of(boxes), None)

    def empty(frame):
        return Output(np.zeros(frame.shape[:2], np.uint8), {"rbc": [], "wbc": [], "platelet": []}, None)

    report = evaluate(root, "val", [Method("perfect", perfect), Method("empty", empty)], limit=4)
    good, bad = report["methods"]["perfect"]["all"], report["methods"]["empty"]["all"]
    assert good["images"] == 4
    assert all(v in (1.0, None) for v in good["dice"].values())
    assert good["rbc_count_mape_pct"] == 0 and good["wbc_count_exact_pct"] == 100 and good["platelet_count_mae"] == 0
    assert bad["dice"]["rbc"] == 0 and bad["rbc_count_mape_pct"] == 100 and bad["dice"]["background"] < 0.9
    # the ellipse masks score themselves perfectly; against whole-cell masks they lose the cut cells' ends
    whole = good["dice_whole_cells"]
    assert whole["rbc"] < 1.0 and whole["background"] < 1.0 and bad["dice_whole_cells"]["rbc"] == 0
    assert "whole-cell masks" in format_report(report)
    for name in ("rbc", "wbc", "platelet"):
        if good["objects_iou50"][name]["truths"]:
            assert good["objects_iou50"][name]["f1"] == good["objects_iou50"][name]["ap50"] == 1.0
            assert bad["objects_iou50"][name]["recall"] == bad["objects_iou50"][name]["ap50"] == 0.0
    text = format_report(report)
    assert "perfect" in text and "empty" in text and "targets" in text and "IoU >= 0.5" in text


def test_evaluation_of_a_held_out_part_reads_only_those_frames(shared_data):
    from training.txl_pbc import Part

    root = shared_data / "txl_pbc"

    def empty(frame):
        return Output(np.zeros(frame.shape[:2], np.uint8), {"rbc": [], "wbc": [], "platelet": []}, None)

    report = evaluate(root, "train", [Method("empty", empty)], part=Part(3, held=True))
    assert report["images"] == 3 and report["holdout_last"] == 3
    assert [r["image"] for r in report["methods"]["empty"]["per_image"]] == [
        s.stem for s in list_samples(root, "train")[-3:]]
    assert "held out: last 3 by name" in format_report(report)


def _cells_of(boxes):
    """Label boxes as cell records (confidence 1): what a perfect detector would report."""
    out = {name: [] for name in CELL_CLASSES}
    for b in boxes:
        name = next(k for k, v in CELL_CLASSES.items() if v == b.cls)
        x0, y0 = int(round(b.cx - b.w / 2)), int(round(b.cy - b.h / 2))
        out[name].append(Cell(name, len(out[name]) + 1, (b.cx, b.cy), (x0, y0, int(round(b.w)), int(round(b.h))),
                              int(b.w * b.h), 1.0, False))
    return out


def test_greedy_matching_and_average_precision_on_known_answers():
    truth = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    pred = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10], [50, 50, 60, 60]], float)
    conf = np.array([0.9, 0.95, 0.5, 0.8])
    hit = match(pred, conf, truth)
    # The more confident of the two boxes on the first cell takes it; the other is a false positive.
    assert hit.tolist() == [False, True, True, False]
    # Ranked: 0.95 hit, 0.9 miss, 0.8 miss, 0.5 hit -> precision 1 at recall 0.5, 0.5 at recall 1.
    assert average_precision(conf, hit, truths=2) == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    assert average_precision(np.zeros(0), np.zeros(0, bool), truths=3) == 0.0
    assert iou_matrix(pred[:2], truth[:1])[1, 0] == pytest.approx(90 / 110)


def test_label_checks_flag_duplicates_and_oversized_boxes():
    image = np.full((200, 200, 3), 200, np.uint8)
    boxes = [Box(RBC, 50, 50, 30, 30), Box(RBC, 51, 50, 30, 31), Box(RBC, 150, 50, 30, 30),
             Box(RBC, 100, 150, 60, 60)]
    issues = check_image(image, boxes)
    assert any("two boxes on one cell" in i for i in issues)
    assert any("2.0x the median" in i for i in issues)
    assert check_image(image, boxes[2:3]) == []


def test_label_checks_flag_a_white_cell_box_smaller_than_a_red_cell_unless_cut_by_the_edge():
    from runtime.contracts.classes import WBC

    image = np.full((200, 200, 3), 200, np.uint8)
    red = [Box(RBC, 40, 40, 30, 30), Box(RBC, 160, 40, 30, 30), Box(RBC, 40, 160, 30, 30)]
    platelet_boxed_white = Box(WBC, 100, 100, 12, 12)
    lymphocyte = Box(WBC, 150, 150, 34, 32)  # 1.1 red cells: small white cells are real
    cut_at_edge = Box(WBC, 5, 100, 10, 40)  # a sliver of a white cell cut by the frame
    issues = check_image(image, red + [platelet_boxed_white, lymphocyte, cut_at_edge])
    assert issues == ["white-cell box at (100,100) is 0.40x the median red cell"]


def test_classical_baseline_finds_cells_on_a_real_image(shared_data):
    from training.baseline import classical_segment

    image, boxes = load_sample(list_samples(shared_data / "txl_pbc", "val")[0])
    mask = classical_segment(image)
    truth = boxes_to_mask(boxes, image.shape[:2])
    inter = ((mask > 0) & (truth > 0)).sum()
    assert 2 * inter / ((mask > 0).sum() + (truth > 0).sum()) > 0.6  # finds the stained cells


def test_baseline_on_a_blank_frame_is_empty():
    from training.baseline import classical_segment

    assert classical_segment(np.full((120, 160, 3), 230, np.uint8)).max() == 0


def test_cli_reports_a_missing_data_folder_in_one_line(cli_runner, tmp_path, repo_root):
    from smearscope.cli import cli

    model = repo_root / "models" / "segmentation.int8.onnx"
    if not model.is_file():
        pytest.skip("no shipped model")
    result = cli_runner.invoke(cli, ["evaluate", "--data", str(tmp_path / "nowhere"), "--model", str(model)])
    assert result.exit_code != 0
    assert "no images/val folder" in result.output
    assert "Traceback" not in result.output


def test_cli_help(cli_runner):
    from smearscope.cli import cli

    result = cli_runner.invoke(cli, ["evaluate", "--help"])
    assert result.exit_code == 0 and "--split" in result.output and "--update-cards" in result.output


def test_cli_rule_and_plan_overrides_change_the_counts_and_are_recorded(cli_runner, tmp_path, repo_root, shared_data):
    import json

    from smearscope.cli import cli

    model = repo_root / "models" / "segmentation.int8.onnx"
    if not model.is_file():
        pytest.skip("no shipped model")
    base = ["evaluate", "--data", str(shared_data / "txl_pbc"), "--model", str(model), "--limit", "2", "--no-baseline"]
    result = cli_runner.invoke(cli, base + ["--rule", "wbc_min_area=50", "--rule", "wbc_border_min_area=50",
                                            "--plan", "wbc_border_band=0", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["overrides"] == {"plan": {"wbc_border_band": 0.0},
                                   "rules": {"wbc_min_area": 50.0, "wbc_border_min_area": 50.0}}
    per_image = report["methods"][model.name]["per_image"]  # no white region is 50 red cells large
    assert sum(r["true"]["wbc"] for r in per_image) > 0 and all(r["pred"]["wbc"] == 0 for r in per_image)
    bad = cli_runner.invoke(cli, base + ["--rule", "no_such_rule=1"])
    assert bad.exit_code == 2 and "platelet_min_area" in bad.output
    refused = cli_runner.invoke(cli, base + ["--rule", "rbc_min_area=0.3", "--update-cards"])
    assert refused.exit_code != 0 and "drop --plan/--rule" in refused.output


def test_models_sharing_a_file_name_are_reported_apart(cli_runner, tmp_path, repo_root, shared_data):
    """models/v3/segmentation.int8.onnx beside models/segmentation.int8.onnx: two rows, not one
    overwriting the other."""
    import json

    from smearscope.cli import cli
    from smearscope.cli.evaluate import method_names

    shipped, v3 = repo_root / "models" / "segmentation.int8.onnx", repo_root / "models" / "v3" / "segmentation.int8.onnx"
    assert method_names([shipped, v3]) == {shipped: "models/segmentation.int8.onnx",
                                           v3: "v3/segmentation.int8.onnx"}
    assert method_names([shipped, shipped.with_name("segmentation.fp32.onnx")])[shipped] == "segmentation.int8.onnx"
    result = cli_runner.invoke(cli, ["evaluate", "--data", str(shared_data / "txl_pbc"), "--model", str(shipped),
                                     "--model", str(v3), "--limit", "1", "--no-baseline", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    methods = json.loads((tmp_path / "r.json").read_text())["methods"]
    assert set(methods) == {"models/segmentation.int8.onnx", "v3/segmentation.int8.onnx"}
    assert "v3/segmentation.int8.onnx" in result.output


def test_plan_overrides_take_whole_numbers_for_integer_fields():
    import click

    from runtime.analysis.counting import CountRules
    from runtime.contracts.card_sections import InferencePlan
    from smearscope.cli.evaluate import _numeric_overrides

    assert _numeric_overrides(("refinements=0", "tolerance=0.1"), InferencePlan, "--plan") == {"refinements": 0, "tolerance": 0.1}
    assert isinstance(_numeric_overrides(("refinements=3",), InferencePlan, "--plan")["refinements"], int)
    assert _numeric_overrides(("platelet_min_area=0.1",), CountRules, "--rule") == {"platelet_min_area": 0.1}
    with pytest.raises(click.BadParameter, match="not a whole number"):
        _numeric_overrides(("refinements=1.5",), InferencePlan, "--plan")
    with pytest.raises(click.BadParameter, match="refinements"):
        _numeric_overrides(("flip_average=1",), InferencePlan, "--plan")


def test_rule_search_reads_overrides_as_evaluate_does():
    """training.rule_search score and smearscope evaluate share one FIELD=NUMBER parser: the same
    strings give the same numbers, and a bad one stops the search with the same message."""
    from runtime.analysis.counting import CountRules
    from runtime.contracts.card_sections import InferencePlan
    from training.rule_search import _overrides

    assert _overrides(["refinements=2", "tolerance=0.05"], InferencePlan) == {"refinements": 2, "tolerance": 0.05}
    assert isinstance(_overrides(["refinements=2"], InferencePlan)["refinements"], int)
    assert _overrides(["centre_threshold=0.6"], CountRules) == {"centre_threshold": 0.6}
    with pytest.raises(SystemExit, match="not a whole number"):
        _overrides(["refinements=1.5"], InferencePlan)
    with pytest.raises(SystemExit, match="centre_threshold"):
        _overrides(["centre=0.6"], CountRules)
