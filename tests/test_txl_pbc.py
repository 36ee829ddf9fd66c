"""Reading TXL-PBC labels into project classes, and the data source the trainer uses."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.contracts.classes import PLATELET, RBC, WBC
from runtime.contracts.errors import DataError
from training.txl_pbc import Box, count_boxes, list_samples, median_rbc_diameter_px, read_boxes


def test_file_classes_map_to_project_classes(tmp_path):
    label = tmp_path / "a.txt"
    label.write_text("0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.1 0.1\n\n2 0.1 0.1 0.05 0.05\n")
    boxes = read_boxes(label, width=200, height=100)
    assert [b.cls for b in boxes] == [WBC, RBC, PLATELET]
    assert boxes[0] == Box(WBC, 100.0, 50.0, 40.0, 40.0)
    assert count_boxes(boxes) == {"rbc": 1, "wbc": 1, "platelet": 1}


def test_missing_label_file_means_no_cells(tmp_path):
    assert read_boxes(tmp_path / "none.txt", 10, 10) == []
    assert median_rbc_diameter_px([]) is None


@pytest.mark.parametrize("line", ["1 0.5 0.5 0.1", "7 0.5 0.5 0.1 0.1", "x 0.5 0.5 0.1 0.1", "1 0.5 0.5 0.1 0.1 9"])
def test_malformed_line_names_file_and_line(tmp_path, line):
    label = tmp_path / "bad.txt"
    label.write_text("1 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(DataError, match=r"bad.txt:2"):
        read_boxes(label, 100, 100)


def test_test_split_is_refused(tmp_path):
    with pytest.raises(DataError, match="split"):
        list_samples(tmp_path, "test")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        list_samples(tmp_path, "val")


def test_source_gives_box_masks_and_measured_scale(shared_data):
    from training.datasets import build_source

    source = build_source("txl_pbc", shared_data / "txl_pbc", "val")
    assert len(source) == 288
    sample = source[0]
    assert sample.mask.shape == sample.image.shape[:2]
    assert set(np.unique(sample.mask)) <= {0, 1, 2, 3}
    assert 50 < sample.rbc_diameter_px < 170  # red cells are 70-125 px across in this data
    assert sample.instances.max() >= 1
    assert source.describe()["split"] == "val"


def test_holdout_part_is_the_last_frames_by_name(tmp_path):
    from training.txl_pbc import Part

    (tmp_path / "images" / "train").mkdir(parents=True)
    for name in ("d", "a", "e", "c", "b"):
        (tmp_path / "images" / "train" / f"{name}.jpg").write_bytes(b"")

    def stems(part: Part) -> list[str]:
        return [s.stem for s in list_samples(tmp_path, "train", part)]

    assert stems(Part()) == ["a", "b", "c", "d", "e"]
    assert stems(Part(2)) == ["a", "b", "c"] and stems(Part(2, held=True)) == ["d", "e"]
    assert Part(2, held=True).describe() == {"holdout_last": 2, "part": "held out"} and Part().describe() == {}
    with pytest.raises(DataError, match="leaves nothing"):
        list_samples(tmp_path, "train", Part(5))
    with pytest.raises(DataError, match="above 0"):
        list_samples(tmp_path, "train", Part(0, held=True))
