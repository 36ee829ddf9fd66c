"""The evaluation report: a shipped (ONNX) model and the classical baseline on a TXL-PBC split.

Everything runs the way the device runs it: the one preprocessing with the scale estimated from
the frame (never from the boxes), runtime.analysis.scale_search.segment_frame (the scale search)
and find_segmentation_cells (cells found on the network grid, recorded in frame pixels). Dice
scores the segmentation's frame-size mask (Segmentation.frame_mask). Truth is the labeller's
mask of the boxes and the number of boxes per class (border-cut cells included).

Reported: pooled per-class Dice, red-cell count MAPE, white-cell count exact rate, platelet MAE,
per class object precision / recall / F1 at IoU >= 0.5 and AP@0.5 (training.objects: each cell's
box against the labelled boxes), how well the scale was recovered (vs the median red-cell box),
and all of it again without the images whose labels the label checks flag
(training.label_checks), with the flagged list.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.analysis.cells import Cell
from runtime.analysis.counting import DEFAULT_RULES, CountRules, find_cells
from runtime.analysis.scale_search import find_segmentation_cells, segment_frame
from training.baseline import classical_segment
from training.labels import boxes_to_mask, whole_cells
from training.metrics import ConfusionMeter
from training.objects import ObjectTally
from training.rule_search import RULE_SELECTION
from training.txl_pbc import Part, count_boxes, list_samples, load_sample, median_rbc_diameter_px


@dataclass(frozen=True)
class Output:
    """What a method gives for one frame."""

    mask: np.ndarray
    """The class mask at the frame's size (a segmentation's grid mask upsampled), scored by Dice."""
    cells: dict[str, list[Cell]]
    """Every counted cell by class; the counts are their numbers."""
    rbc_diameter_px: float | None
    """Measured red-cell diameter in frame pixels."""

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(cells) for name, cells in self.cells.items()}


@dataclass
class Method:
    """Something that turns a frame into its mask, cells and measured red-cell size."""

    name: str
    analyse: Callable[[np.ndarray], Output]


def onnx_method(model_path: str | Path, name: str | None = None, threads: int = 2,
                rules: CountRules = DEFAULT_RULES, **plan_changes: Any) -> Method:
    """A shipped model through the device's code path (sha256 checked against its card), with the
    card's inference plan (`plan_changes` override its fields, e.g. flip_average=False) and the
    counting `rules`."""
    from runtime.inference.session import SessionOptions
    from runtime.inference.model import SegmentationModel

    model = SegmentationModel.load(model_path, SessionOptions(intra_op_threads=threads, warmup=False))
    model.plan = model.plan.replace(**plan_changes)

    def analyse(frame: np.ndarray) -> Output:
        seg = segment_frame(model, frame)  # what the device runs (Analyzer.analyze)
        cells = find_segmentation_cells(seg, rules).cells
        return Output(seg.frame_mask(), cells.by_class, seg.scale.rbc_diameter_px)

    return Method(name or Path(model_path).name, analyse)


def baseline_method(rules: CountRules = DEFAULT_RULES) -> Method:
    """Thresholds + watershed (training.baseline), counted by the same rules."""
    from runtime.inference.preprocess import estimate_rbc_diameter_px

    def analyse(frame: np.ndarray) -> Output:
        diameter = estimate_rbc_diameter_px(frame)
        mask = classical_segment(frame, diameter)
        return Output(mask, find_cells(mask, rbc_diameter_px=diameter, rules=rules).cells.by_class, diameter)

    return Method("classical baseline", analyse)


@dataclass
class _Tally:
    confusion: ConfusionMeter = field(default_factory=ConfusionMeter)
    """Against the cards' truth: every box as its inscribed ellipse."""
    whole_cell_confusion: ConfusionMeter = field(default_factory=ConfusionMeter)
    """Against masks with cut boxes painted as the visible part of their disc (training.labels.whole_cells)."""
    records: list[dict[str, Any]] = field(default_factory=list)
    objects: ObjectTally = field(default_factory=ObjectTally)


def summarise(tally: _Tally) -> dict[str, Any]:
    """Per-class Dice (pooled over all pixels), the count metrics and the object metrics of a set of images."""
    dice = {k: v["dice"] for k, v in tally.confusion.scores().items()}
    whole = {k: v["dice"] for k, v in tally.whole_cell_confusion.scores().items()}
    recs = tally.records
    rbc_ape = [abs(r["pred"]["rbc"] - r["true"]["rbc"]) / r["true"]["rbc"] for r in recs if r["true"]["rbc"] > 0]
    scale_err = [abs(r["rbc_diameter_px"] / r["true_rbc_diameter_px"] - 1) for r in recs
                 if r["rbc_diameter_px"] and r["true_rbc_diameter_px"]]
    return {
        "images": len(recs),
        "dice": {k: None if v is None else round(v, 4) for k, v in dice.items()},
        "dice_whole_cells": {k: None if v is None else round(v, 4) for k, v in whole.items()},
        "rbc_count_mape_pct": round(100 * float(np.mean(rbc_ape)), 2) if rbc_ape else None,
        "wbc_count_exact_pct": round(100 * float(np.mean([r["pred"]["wbc"] == r["true"]["wbc"] for r in recs])), 2)
        if recs else None,
        "platelet_count_mae": round(float(np.mean([abs(r["pred"]["platelet"] - r["true"]["platelet"]) for r in recs])), 4)
        if recs else None,
        "rbc_diameter_mape_pct": round(100 * float(np.mean(scale_err)), 2) if scale_err else None,
        "objects_iou50": tally.objects.summary(),
    }


def evaluate(data_root: str | Path, split: str, methods: Sequence[Method], *, limit: int | None = None,
             flagged: set[str] | None = None, progress: Callable[[int], None] | None = None,
             part: Part = Part()) -> dict[str, Any]:
    """Run every method on the split's images (or its `part`); returns the report (JSON-serialisable)."""
    samples = list_samples(data_root, split, part)
    if limit:
        samples = samples[:: max(1, len(samples) // limit)][:limit]
    flagged = flagged or set()
    if len({m.name for m in methods}) < len(methods):
        raise ValueError(f"methods need distinct names (the report is keyed by them): {[m.name for m in methods]}")
    tallies = {m.name: (_Tally(), _Tally()) for m in methods}
    seconds = {m.name: 0.0 for m in methods}
    for i, sample in enumerate(samples):
        image, boxes = load_sample(sample)
        truth = boxes_to_mask(boxes, image.shape[:2])  # the protocol of every card: inscribed ellipses, cut boxes too
        whole_truth = boxes_to_mask(whole_cells(boxes, image.shape[:2]), image.shape[:2])  # as training paints them
        true_counts = count_boxes(boxes)
        for method in methods:
            start = time.perf_counter()
            out = method.analyse(image)
            seconds[method.name] += time.perf_counter() - start
            diameter = out.rbc_diameter_px
            record = {"image": sample.stem, "true": true_counts, "pred": out.counts,
                      "rbc_diameter_px": None if diameter is None else round(diameter, 2),
                      "true_rbc_diameter_px": median_rbc_diameter_px(boxes)}
            everything, clean = tallies[method.name]
            subsets = (everything, clean) if sample.stem not in flagged else (everything,)
            for i_subset, tally in enumerate(subsets):
                tally.confusion.update(out.mask, truth)
                tally.whole_cell_confusion.update(out.mask, whole_truth)
                tally.records.append(record)
                matched = tally.objects.add(out.cells, boxes)
                if i_subset == 0:
                    record["objects"] = matched
        if progress:
            progress(i + 1)
    report: dict[str, Any] = {"split": split, **part.describe(), "data": str(data_root), "images": len(samples),
                              "methods": {}}
    for method in methods:
        everything, clean = tallies[method.name]
        report["methods"][method.name] = {
            "all": summarise(everything),
            "without_flagged_labels": summarise(clean),
            "seconds_per_image": round(seconds[method.name] / max(1, len(samples)), 4),
            "per_image": everything.records,
        }
    return report


TARGETS = {"dice": {"rbc": 0.93, "wbc": 0.93, "platelet": 0.85, "background": 0.90},
           "rbc_count_mape_pct": 5.0, "wbc_count_exact_pct": 98.0, "platelet_count_mae": 0.08,
           "object_f1_iou50": {"rbc": 0.95, "wbc": 0.97, "platelet": 0.85}}
"""The acceptance targets (Dice: the segmentation issue; counts and objects: the per-cell issue);
shown beside the measurements, never used to tune."""


def format_report(report: dict[str, Any]) -> str:
    """Human-readable table of a report (the JSON holds everything, per image too)."""
    part = f" ({report['part']}: last {report['holdout_last']} by name)" if report.get("holdout_last") else ""
    lines = [f"{report['split']} split{part}, {report['images']} images ({report['data']})"]
    header = f"{'method':<34}{'subset':<10}{'bg':>7}{'rbc':>7}{'wbc':>7}{'plt':>7}{'RBC MAPE%':>11}{'WBC exact%':>12}{'PLT MAE':>9}{'d MAPE%':>9}"
    lines.append(header)
    lines.append("-" * len(header))
    for name, result in report["methods"].items():
        for subset, key in (("all", "all"), ("clean", "without_flagged_labels")):
            s = result[key]
            d = s["dice"]

            def f(v: float | None, fmt: str = "{:.3f}") -> str:
                return "-" if v is None else fmt.format(v)

            lines.append(f"{name[:33]:<34}{subset:<10}{f(d['background']):>7}{f(d['rbc']):>7}{f(d['wbc']):>7}"
                         f"{f(d['platelet']):>7}{f(s['rbc_count_mape_pct'], '{:.2f}'):>11}"
                         f"{f(s['wbc_count_exact_pct'], '{:.1f}'):>12}{f(s['platelet_count_mae'], '{:.3f}'):>9}"
                         f"{f(s['rbc_diameter_mape_pct'], '{:.1f}'):>9}")
    t = TARGETS
    lines.append(f"{'targets':<44}{t['dice']['background']:>7.2f}{t['dice']['rbc']:>7.2f}{t['dice']['wbc']:>7.2f}"
                 f"{t['dice']['platelet']:>7.2f}{t['rbc_count_mape_pct']:>11.2f}{t['wbc_count_exact_pct']:>12.1f}"
                 f"{t['platelet_count_mae']:>9.3f}")
    lines.append("")
    lines.append("Dice against whole-cell masks (cut boxes painted as the visible part of their disc):")
    for name, result in report["methods"].items():
        d = result["all"].get("dice_whole_cells") or {}
        lines.append(f"{name[:33]:<34}{'all':<10}" + "".join(
            f"{'-' if d.get(c) is None else format(d[c], '.3f'):>7}" for c in ("background", "rbc", "wbc", "platelet")))
    lines.append("")
    lines.append(_object_table(report))
    if report.get("flagged"):
        lines.append(f"clean = without the {len(report['flagged'])} images the label checks flag (see the JSON)")
    return "\n".join(lines)


def _object_table(report: dict[str, Any]) -> str:
    """Per class precision / recall / F1 at IoU >= 0.5 and AP@0.5."""
    header = f"{'objects at IoU >= 0.5':<34}{'subset':<10}" + "".join(
        f"{c + ' P/R/F1/AP':>30}" for c in ("rbc", "wbc", "plt")) + f"{'mAP':>7}"
    lines = [header, "-" * len(header)]
    for name, result in report["methods"].items():
        for subset, key in (("all", "all"), ("clean", "without_flagged_labels")):
            o = result[key]["objects_iou50"]
            cells = []
            for c in ("rbc", "wbc", "platelet"):
                v = o[c]
                cells.append("/".join("-" if v[k] is None else f"{v[k]:.3f}" for k in ("precision", "recall", "f1", "ap50")))
            m = o["map50"]["ap50"]
            lines.append(f"{name[:33]:<34}{subset:<10}" + "".join(f"{x:>30}" for x in cells)
                         + f"{'-' if m is None else format(m, '.3f'):>7}")
    f1 = TARGETS["object_f1_iou50"]
    lines.append(f"{'targets (F1)':<44}" + "".join(f"{'F1 >= ' + format(f1[c], '.2f'):>30}" for c in ("rbc", "wbc", "platelet")))
    return "\n".join(lines)


def card_metrics(report: dict[str, Any], model_name: str, reference_name: str | None = None) -> dict[str, Any]:
    """The section a model card keeps from a report: this model's summary, the classical baseline's,
    and (for an int8 model) the change from its fp32 reference on the same images."""
    methods = report["methods"]
    mine = methods[model_name]
    section: dict[str, Any] = {
        "data": {"name": "txl_pbc", "split": report["split"], "images": report["images"]},
        "protocol": "scale estimated from each frame (scale search), cells and counts via "
                    "runtime.analysis.counting.find_cells on the network grid (records mapped to frame pixels); "
                    "Dice pooled over pixels of the frame-size mask (Segmentation.frame_mask) vs box-derived "
                    "ellipse masks (inscribed in every box, cut ones too, as in every card; `dice`) and vs masks "
                    "whose boxes cut by one frame edge are painted as the visible part of their disc "
                    "(training.labels.whole_cells, as training paints them; `dice_whole_cells`); "
                    "objects: each cell's box vs the labelled boxes, greedy by confidence at IoU >= 0.5, AP@0.5 "
                    "ranked by confidence (training.objects)",
        "rule_selection": RULE_SELECTION,
        "all": mine["all"],
        "without_flagged_labels": mine["without_flagged_labels"],
        "flagged_images": len(report.get("flagged") or {}),
        "targets": TARGETS,
    }
    if "classical baseline" in methods:
        section["classical_baseline"] = methods["classical baseline"]["all"]
    if reference_name and reference_name in methods:
        ref = methods[reference_name]["all"]
        section["change_from_fp32"] = {
            **{key: {k: _delta(v, ref[key][k]) for k, v in mine["all"][key].items()}
               for key in ("dice", "dice_whole_cells")},
            "rbc_count_mape_pct": _delta(mine["all"]["rbc_count_mape_pct"], ref["rbc_count_mape_pct"]),
            "wbc_count_exact_pct": _delta(mine["all"]["wbc_count_exact_pct"], ref["wbc_count_exact_pct"]),
            "platelet_count_mae": _delta(mine["all"]["platelet_count_mae"], ref["platelet_count_mae"]),
            "objects_iou50": {c: {k: _delta(mine["all"]["objects_iou50"][c][k], ref["objects_iou50"][c][k])
                                  for k in ("precision", "recall", "f1", "ap50")}
                              for c in ("rbc", "wbc", "platelet")},
        }
    return section


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def write_card_metrics(model_path: str | Path, section: dict[str, Any], key: str = "txl_pbc_evaluation") -> None:
    """Store an evaluation section in a model's card (the ONNX file, hence its sha256, is untouched)."""
    from runtime.contracts.modelcard import load_card, card_path_for

    card = load_card(model_path)
    card.metrics[key] = section
    card.write(card_path_for(model_path))
