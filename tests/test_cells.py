"""Cells as instances: records from the counting labels, result/2 built on the device and checked by the server."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.analysis.analyzer import FrameAnalysis
from runtime.analysis.cells import DEFAULT_CELL_LIMIT, instance_stats
from runtime.analysis.counting import DEFAULT_RULES, count_cells, find_cells, label_cells
from runtime.analysis.quality import QualityReport
from runtime.analysis.result import build_result
from runtime.contracts.classes import PLATELET, RBC, WBC, area_percentages
from runtime.contracts.errors import SchemaError
from runtime.contracts.sample import SampleContext, SampleField
from runtime.contracts.schema import schema_errors
from runtime.inference.preprocess import ScaleDecision
from server.config import ServerConfig
from server.service import ResultServer
from server.store import Store

D = 30.0  # red-cell diameter in pixels
SITE_TOPIC = "smearscope/v1/lab1/dev-a/results"
MODEL = {"name": "segmentation", "version": "3", "sha256": "0" * 64}


def _disc(mask: np.ndarray, centre: tuple[int, int], radius: int, cls: int) -> None:
    cv2.circle(mask, centre, radius, cls, -1)


def _smear() -> np.ndarray:
    """Two touching red cells, one lone red cell cut by the border, a white cell and a platelet."""
    mask = np.zeros((120, 200), np.uint8)
    _disc(mask, (40, 40), 15, RBC)
    _disc(mask, (66, 40), 15, RBC)
    _disc(mask, (190, 100), 15, RBC)
    _disc(mask, (120, 70), 20, WBC)
    _disc(mask, (160, 25), 4, PLATELET)
    return mask


def _analysis(mask: np.ndarray, accepted: bool = True, um_per_px: float | None = None,
              diameter: float = D) -> FrameAnalysis:
    found = find_cells(mask, rbc_diameter_px=diameter, um_per_px=um_per_px)
    reasons = () if accepted else ("no cells: stained objects cover 0.0% of the frame (minimum 1.0%)",)
    quality = QualityReport(accepted, 100.0, 150.0, 0.0, 0.3 if accepted else 0.0, reasons)
    return FrameAnalysis(quality, ScaleDecision(1.0, "estimated", D), mask, found.cells.counts,
                         area_percentages(mask), None, None, {"total": 1.0}, accepted,
                         cells=found.cells, found=found, um_per_px=um_per_px)


def _result(analysis: FrameAnalysis, **kwargs) -> dict:
    sample = SampleField(SampleContext(sample_id="S-1"), field_index=0)
    return build_result(analysis, device_id="dev-a", seq=1, sample=sample, model=MODEL, **kwargs)


def test_records_are_the_counted_instances() -> None:
    mask = _smear()
    found = find_cells(mask, rbc_diameter_px=D, um_per_px=0.25)
    assert found.cells.counts == count_cells(mask, rbc_diameter_px=D) == {"rbc": 3, "wbc": 1, "platelet": 1}
    (wbc,) = found.cells.by_class["wbc"]
    x, y, w, h = wbc.bbox_px
    assert (x, y, w, h) == (100, 50, 41, 41) and wbc.area_px == int((mask == WBC).sum())
    assert wbc.centre_px == pytest.approx((120.0, 70.0), abs=0.01)
    assert wbc.equivalent_diameter_px == pytest.approx(40.0, rel=0.03)
    assert wbc.centre_um == pytest.approx((30.0, 17.5), abs=0.01) and wbc.area_um2 == pytest.approx(wbc.area_px / 16)
    assert not wbc.on_border and wbc.confidence == 1.0  # no probabilities given
    border = [c for c in found.cells.by_class["rbc"] if c.on_border]
    assert len(border) == 1 and border[0].bbox_px[0] + border[0].bbox_px[2] == 200
    # The touching pair is two instances, split near the middle (the valley between two centres).
    pair = sorted((c for c in found.cells.by_class["rbc"] if not c.on_border), key=lambda c: c.centre_px[0])
    assert pair[0].bbox_px[0] + pair[0].bbox_px[2] == pytest.approx(53, abs=3)
    assert pair[1].area_px == pytest.approx(pair[0].area_px, rel=0.1)


def test_a_red_cell_cut_by_one_edge_has_a_box_as_long_as_its_visible_chord() -> None:
    """A red sliver whose thin ends were lost (a 10 px deep, 20 px long block at an edge) gets the
    box a disc of the red-cell diameter shows at that depth: 2 sqrt(10 (32 - 10)) = 29.7 px long,
    round the sliver's middle; its count, area and centre stay; corner and whole cells keep the
    span of their pixels, and with the rule off every box is that span."""
    d = 32.0
    mask = np.zeros((120, 160), np.uint8)
    mask[40:60, 0:10] = RBC  # cut by the left edge
    mask[0:10, 70:90] = RBC  # cut by the top edge
    mask[110:120, 150:160] = RBC  # a corner: cut by two edges
    cv2.circle(mask, (100, 70), 16, RBC, -1)  # whole
    widened = find_cells(mask, rbc_diameter_px=d).cells.by_class["rbc"]
    plain = find_cells(mask, rbc_diameter_px=d, rules=replace(DEFAULT_RULES, rbc_cut_chord=0.0)).cells.by_class["rbc"]
    assert len(widened) == len(plain) == 4
    by_place = {(round(c.centre_px[0]), round(c.centre_px[1])): c for c in widened}
    chord = 2 * np.sqrt(10 * (d - 10))
    left, top = by_place[(4, 50)], by_place[(80, 4)]  # centroids (4.5, 49.5) and (79.5, 4.5)
    assert left.bbox_px[0] == 0 and left.bbox_px[2] == 10 and left.bbox_px[3] == pytest.approx(chord, abs=1)
    assert left.bbox_px[1] + left.bbox_px[3] / 2 == pytest.approx(50, abs=1)
    assert top.bbox_px[1] == 0 and top.bbox_px[3] == 10 and top.bbox_px[2] == pytest.approx(chord, abs=1)
    for a, b in zip(widened, plain):
        assert (a.number, a.area_px, a.centre_px, a.on_border) == (b.number, b.area_px, b.centre_px, b.on_border)
        ys, xs = np.nonzero(label_cells(mask, rbc_diameter_px=d)["rbc"] == b.number)
        assert b.bbox_px == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        if a is not left and a is not top:
            assert a.bbox_px == b.bbox_px


def test_confidence_is_the_mean_class_probability_inside_each_cell() -> None:
    mask = _smear()
    prob = np.full(mask.shape, 0.9, np.float32)
    prob[mask == WBC] = 0.5
    prob[70, 120] = 1.0  # one pixel moves the mean a little
    cells = find_cells(mask, class_prob=prob, rbc_diameter_px=D).cells
    n = int((mask == WBC).sum())
    assert cells.by_class["wbc"][0].confidence == pytest.approx((0.5 * (n - 1) + 1.0) / n, rel=1e-5)
    assert all(c.confidence == pytest.approx(0.9) for c in cells.by_class["rbc"])


def test_white_cells_under_the_models_confidence_floor_leave_records_counts_and_labels() -> None:
    """Three white discs: a sure one, an unsure one inside the frame (dropped at a floor of 0.9) and
    an unsure one cut by the frame's edge (kept: a cut cell shows the network less of itself)."""
    mask = np.zeros((120, 200), np.uint8)
    prob = np.full(mask.shape, 0.99, np.float32)
    for (x, y), p in (((40, 60), 0.97), ((110, 60), 0.7), ((195, 60), 0.6)):
        cv2.circle(mask, (x, y), 15, WBC, -1)
        disc = np.zeros(mask.shape, np.uint8)
        cv2.circle(disc, (x, y), 15, 1, -1)
        prob[disc > 0] = p
    everything = find_cells(mask, class_prob=prob, rbc_diameter_px=D)
    floored = find_cells(mask, class_prob=prob, rbc_diameter_px=D, wbc_min_confidence=0.9)
    assert everything.cells.counts["wbc"] == 3
    kept = floored.cells.by_class["wbc"]
    assert [(c.number, round(c.confidence, 2), c.on_border) for c in kept] == [(1, 0.97, False), (2, 0.6, True)]
    labels = floored.labels["wbc"]
    assert set(np.unique(labels).tolist()) == {0, 1, 2}  # renumbered: the records' numbers draw them
    assert labels[60, 110] == 0 and labels[60, 40] == 1 and labels[60, 195] == 2
    assert np.array_equal(floored.mask, mask)  # the class mask (area %) keeps the pixels
    without_probabilities = find_cells(mask, rbc_diameter_px=D, wbc_min_confidence=0.9)
    assert without_probabilities.cells.counts["wbc"] == 3  # no probabilities, no floor


def test_statistics_match_a_per_label_loop() -> None:
    rng = np.random.default_rng(3)
    labels = np.zeros((90, 110), np.int32)
    for i in range(1, 40):
        y, x = rng.integers(0, 85), rng.integers(0, 105)
        labels[y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] = i
    present = np.unique(labels[labels > 0])
    labels = np.searchsorted(present, labels) * (labels > 0)  # ids 1..N
    conf = rng.random(labels.shape).astype(np.float32)
    stats = instance_stats(labels, conf)
    for i in range(1, int(labels.max()) + 1):
        ys, xs = np.nonzero(labels == i)
        assert stats["area"][i - 1] == ys.size
        assert (stats["x0"][i - 1], stats["y1"][i - 1]) == (xs.min(), ys.max())
        assert stats["cx"][i - 1] == pytest.approx(xs.mean())
        assert stats["confidence"][i - 1] == pytest.approx(conf[labels == i].mean(), rel=1e-5)


def test_result2_carries_every_cell_and_validates() -> None:
    message = _result(_analysis(_smear(), um_per_px=0.25))
    assert message["schema"] == "result/2" and not schema_errors(message)
    items = message["cells"]["items"]
    assert len(items) == 5 and not message["cells"]["capped"]
    assert [row[0] for row in items] == [WBC, PLATELET, RBC, RBC, RBC]  # white cells and platelets first
    assert {c: sum(r[0] == i for r in items) for c, i in (("rbc", RBC), ("wbc", WBC), ("platelet", PLATELET))} \
        == message["counts"]
    assert message["review"]["needed"]
    assert [r["code"] for r in message["review"]["reasons"]] == ["scale_estimated"]


def test_the_compiled_schema_check_agrees_with_jsonschema_on_result2() -> None:
    """A result/2 with cells passes the compiled check (what lets the device skip jsonschema's walk
    over every cell), and each kind of broken cell list fails both checks."""
    from runtime.contracts.schema import _validator, compiled_accepts

    message = _result(_analysis(_smear(), um_per_px=0.25))
    if compiled_accepts(message, "result-2") is None:
        pytest.skip("jsonschema-rs not installed")

    def broken(change) -> dict:
        copy = json.loads(json.dumps(message))
        change(copy)
        return copy

    cases = {
        "valid": message,
        "cell number a string": broken(lambda m: m["cells"]["items"][0].__setitem__(1, "x")),
        "cell area negative": broken(lambda m: m["cells"]["items"][0].__setitem__(8, -5)),
        "cell row too long": broken(lambda m: m["cells"]["items"][0].append(1)),
        "a 13th month": broken(lambda m: m.__setitem__("created_at", "2026-13-02T10:00:00Z")),
        "no review": broken(lambda m: m.pop("review")),
    }
    for label, case in cases.items():
        python_ok = not any(True for _ in _validator("result-2").iter_errors(case))
        assert compiled_accepts(case, "result-2") == python_ok == (label == "valid"), label
        assert bool(schema_errors(case)) == (label != "valid"), label


def test_a_built_result_holds_plain_json_values_only() -> None:
    """Every number in a built result is a Python int or float, not a numpy one (a float64 passes
    isinstance(float) but jsonschema-rs cannot read it, and the compiled check would then need a
    JSON round trip for every field); the compiled verdict on the message as it is and on its JSON
    agree."""
    from runtime.contracts.schema import _compiled

    message = _result(_analysis(_smear(), um_per_px=0.25))

    def odd_values(value, path="") -> list[str]:
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in odd_values(v, f"{path}/{k}")]
        if isinstance(value, list):
            return [p for i, v in enumerate(value) for p in odd_values(v, f"{path}/{i}")]
        return [] if type(value) in (str, int, float, bool, type(None)) else [f"{path}: {type(value).__name__}"]

    assert odd_values(message) == []
    compiled = _compiled("result-2")
    if compiled is None:
        pytest.skip("jsonschema-rs not installed")
    assert compiled.is_valid(message) and compiled.is_valid(json.loads(json.dumps(message)))


def test_a_frame_with_no_cells_gives_an_empty_list_and_a_quality_warning() -> None:
    message = _result(_analysis(np.zeros((64, 80), np.uint8), accepted=False))
    assert message["cells"]["items"] == [] and message["counts"] == {"rbc": 0, "wbc": 0, "platelet": 0}
    assert not message["quality"]["accepted"] and message["quality"]["reasons"]
    assert "quality_rejected" in [r["code"] for r in message["review"]["reasons"]]


def test_thousands_of_specks_are_capped_and_flagged_within_bounded_memory() -> None:
    mask = np.zeros((1200, 1600), np.uint8)
    mask[2::8, 2::8] = PLATELET  # 150 x 200 = 30,000 isolated specks
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    tracemalloc.start()
    found = find_cells(mask, rbc_diameter_px=12.0)  # 9-px specks are 0.08 of a red cell: platelets
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert found.cells.counts["platelet"] == 30000
    assert peak < 200 * mask.size, peak  # a few frame-sized arrays, never frame x objects
    message = _result(_analysis(mask, diameter=12.0))
    assert len(message["cells"]["items"]) == DEFAULT_CELL_LIMIT and message["cells"]["capped"]
    assert message["counts"]["platelet"] == 30000  # the counts still hold every cell
    assert "cells_capped" in [r["code"] for r in message["review"]["reasons"]]
    assert len(json.dumps(message)) < 256 * 1024


def test_a_nan_never_leaves_the_device() -> None:
    analysis = _analysis(_smear())
    analysis.area_pct["rbc"] = float("nan")
    with pytest.raises(SchemaError, match="NaN"):
        _result(analysis)


def test_label_cells_and_records_agree_on_real_shapes() -> None:
    labels = label_cells(_smear(), rbc_diameter_px=D)
    cells = find_cells(_smear(), rbc_diameter_px=D).cells
    assert {k: int(v.max()) for k, v in labels.items()} == cells.counts


@pytest.fixture()
def server(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'server.db'}")
    config = ServerConfig.from_dict({"max_payload_bytes": 256 * 1024, "database": f"sqlite:///{tmp_path}/unused.db"})
    yield ResultServer(config, store=store), store
    store.close()


def _bad(kind: str) -> bytes:
    message = _result(_analysis(_smear()))
    if kind == "nan":
        message["cells"]["items"][0][9] = float("nan")  # json.dumps writes NaN, which is no JSON
    elif kind == "too_many_cells":
        message["cells"]["items"] = message["cells"]["items"][:1] * (DEFAULT_CELL_LIMIT + 1)
    elif kind == "wrong_type":
        message["cells"]["items"][0][0] = "wbc"
    elif kind == "no_review":
        del message["review"]
    return json.dumps(message).encode()


@pytest.mark.parametrize("kind,reason", [("nan", "not_json"), ("too_many_cells", "schema"),
                                         ("wrong_type", "schema"), ("no_review", "schema")])
def test_the_server_rejects_broken_result2_and_keeps_what_it_stored(server, kind: str, reason: str) -> None:
    service, store = server
    good = _result(_analysis(_smear()))
    assert service.handle(SITE_TOPIC, json.dumps(good).encode()).status == "stored"
    before = store.query("SELECT result_id, payload FROM results")
    outcome = service.handle(SITE_TOPIC, _bad(kind))
    assert (outcome.status, outcome.reason) == ("rejected", reason)
    detail = store.query("SELECT reason, detail FROM rejections")
    assert detail[0][0] == reason and detail[0][1]
    assert store.query("SELECT result_id, payload FROM results") == before


def test_the_server_stores_result1_and_result2(server) -> None:
    service, store = server
    result2 = _result(_analysis(_smear()))
    result1 = _result(FrameAnalysis(**{**_analysis(_smear()).__dict__, "cells": None, "found": None}))
    assert result1["schema"] == "result/1" and "cells" not in result1
    for message in (result1, result2):
        assert service.handle(SITE_TOPIC, json.dumps(message).encode()).status == "stored"
    stored = {json.loads(p)["schema"] for (p,) in store.query("SELECT payload FROM results")}
    assert stored == {"result/1", "result/2"}


def test_overlay_outlines_each_touching_cell_and_keeps_the_legend_beside_the_frame() -> None:
    from runtime.analysis.overlay import CLASS_COLOURS_BGR, field_name, render_gallery, render_overlay

    mask = _smear()
    found = find_cells(mask, rbc_diameter_px=D)
    image = np.full((*mask.shape, 3), 200, np.uint8)
    out = render_overlay(image, found.labels, found.cells, "S-1 field 0", ["quality: accepted"])
    zoom = 900 / 200
    frame_w = round(200 * zoom)
    assert out.shape[0] == round(120 * zoom) and out.shape[1] > frame_w  # the panel is beside, not over
    amber = np.all(out[:, :frame_w] == CLASS_COLOURS_BGR["rbc"], axis=2)
    # The line between the two touching red cells (centres x = 40 and 66) is drawn: amber inside the pair.
    between = amber[round(40 * zoom), round(50 * zoom):round(56 * zoom)]
    assert between.any()
    gallery = render_gallery(image, found.labels, found.cells, "S-1 field 0")
    assert gallery.shape[0] == 34 + 128 + 34  # a header and one row of tiles
    tiles = gallery[34:34 + 128]
    assert (tiles[:, :256] != tiles[0, -1]).any(axis=2).mean() > 0.9  # two crops: the white cell, the platelet
    assert (tiles[:, 256:] == tiles[0, -1]).all()  # nothing after them
    assert field_name("S/1 x", 3) == "S_1_x_f4"  # field index 3 is the fourth field
    assert field_name("S", None) == "S_f1"


def test_a_cell_number_goes_where_it_covers_no_other_cell_and_the_gallery_header_fits() -> None:
    from runtime.analysis.overlay import _label_spot, _Occupancy, render_gallery

    rbc = np.zeros((200, 300), np.int32)
    rbc[80:120, 160:220] = 1  # a red cell right of the white cell's box
    taken = _Occupancy(rbc > 0)
    tx, ty = _label_spot(taken, (110.0, 80.0, 40.0, 40.0), (20, 12))
    assert tx + 20 <= 110  # not right of the box, where the red cell is: left of it
    assert taken.count(tx, ty - 12, 20, 12) == 0
    rbc[80:120, 60:110] = 1  # now the left and the space above are taken too
    rbc[40:80, 100:160] = 1
    tx, ty = _label_spot(_Occupancy(rbc > 0), (110.0, 80.0, 40.0, 40.0), (20, 12))
    assert ty - 12 >= 120  # below the box, the one free side
    mask = _smear()
    found = find_cells(mask, rbc_diameter_px=D)
    image = np.full((*mask.shape, 3), 200, np.uint8)
    long_title = "sample S-000123456789 field 12 of a long worklist name"
    gallery = render_gallery(image, found.labels, found.cells, long_title)
    (text_w, _), _ = cv2.getTextSize(f"{long_title}  1 white cell, 1 platelet", cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
    assert gallery.shape[1] >= text_w + 8


def test_overlay_outlines_of_grid_cells_follow_the_cell_not_the_grid_blocks() -> None:
    """A round cell counted on a grid 4x coarser than the frame (as on a camera field) arrives as
    blocks; its drawn outline lies closer to a circle than the blocks' own boundary does."""
    from runtime.analysis.overlay import CLASS_COLOURS_BGR, instance_boundaries, render_overlay

    grid = np.zeros((240, 240), np.uint8)
    cv2.circle(grid, (120, 120), 12, int(RBC), -1)
    blocky = cv2.resize(grid, (960, 960), interpolation=cv2.INTER_NEAREST)  # frame = grid x 4
    found = find_cells(grid, rbc_diameter_px=24)
    labels = {name: cv2.resize(lab.astype(np.float32), (960, 960), interpolation=cv2.INTER_NEAREST).astype(np.int32)
              for name, lab in found.labels.items()}
    out = render_overlay(np.full((960, 960, 3), 200, np.uint8), labels, found.cells)
    drawn = np.argwhere(np.all(out[:, :960] == CLASS_COLOURS_BGR["rbc"], axis=2))
    raw = np.argwhere(instance_boundaries((blocky == RBC).astype(np.int32)))

    def spread(points: np.ndarray) -> float:
        r = np.hypot(points[:, 0] - 481.5, points[:, 1] - 481.5)  # the disc's centre in frame pixels
        return float(r.std())

    assert len(drawn) > 0 and spread(drawn) < 0.8 * spread(raw)


def test_gallery_outline_of_a_grid_platelet_is_round_not_blocky() -> None:
    """A platelet counted on a grid 4x coarser than the frame is enlarged about 3x in its gallery
    crop; the drawn outline lies closer to a circle than the enlarged blocks' own boundary."""
    from runtime.analysis.overlay import CLASS_COLOURS_BGR, render_gallery

    grid = np.zeros((60, 60), np.uint8)
    cv2.circle(grid, (30, 30), 4, int(PLATELET), -1)
    found = find_cells(grid, rbc_diameter_px=24)
    assert found.cells.counts["platelet"] == 1
    labels = {name: cv2.resize(lab.astype(np.float32), (240, 240), interpolation=cv2.INTER_NEAREST).astype(np.int32)
              for name, lab in found.labels.items()}
    cell = found.cells.by_class["platelet"][0]
    frame_cell = type(cell)(cls=cell.cls, number=1, centre_px=(121.5, 121.5), bbox_px=(104, 104, 36, 36),
                            area_px=cell.area_px * 16, confidence=1.0, on_border=False)
    table = type(found.cells)({"rbc": [], "wbc": [], "platelet": [frame_cell]})
    tile = 128
    gallery = render_gallery(np.full((240, 240, 3), 200, np.uint8), labels, table, tile=tile)
    crop = gallery[34:34 + tile, :tile].astype(int)
    green = np.abs(crop - np.array(CLASS_COLOURS_BGR["platelet"])).sum(axis=2) < 120
    drawn = np.argwhere(green)
    side = max(24, int(round(1.6 * 36)))
    blocks = cv2.resize((labels["platelet"][122 - side // 2:122 - side // 2 + side, 122 - side // 2:122 - side // 2 + side] > 0)
                        .astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(blocks, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    raw = contours[0][:, 0, ::-1]

    def spread(points: np.ndarray) -> float:
        centre = points.mean(axis=0)
        return float(np.hypot(*(points - centre).T).std())

    assert len(drawn) > 20 and spread(drawn) < 0.8 * spread(raw), (spread(drawn), spread(raw))
