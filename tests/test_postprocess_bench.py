"""The post-processing benchmark: a calibrated 1280x960 field, each tree in its own worker, one run."""

from __future__ import annotations

import json

import pytest

from benchmarks.postprocess_bench import main
from runtime.inference.model import default_model_path


def test_times_two_trees_on_one_stored_pass_and_reports_the_speed_up(cli_runner, repo_root):
    if not default_model_path().is_file():
        pytest.skip("no shipped model")
    # This checkout against itself: both workers run the same code on the same stored pass.
    result = cli_runner.invoke(main, ["--baseline", str(repo_root), "--rounds", "2", "--runs", "1", "--json"],
                               catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["field"]["frame_hw"] == [960, 1280]
    assert report["field"]["grid_hw"][0] < 960  # calibrated to the network's red-cell size: a smaller grid
    this, base = report["trees"]["this"], report["trees"]["baseline"]
    assert this["counts"] == base["counts"] and this["counts"]["rbc"] > 0
    assert report["identical_results"] and len(this["digest"]) == 64
    for key in ("postprocess_wall", "postprocess_cpu", "read_pass_wall", "read_pass_cpu"):
        assert 0 < this[key]["min"] <= this[key]["p50"]
        assert report["speed-up"][key] == pytest.approx(base[key]["p50"] / this[key]["p50"], abs=0.06)
    assert len(report["load_before"]) == 3
