"""`smearscope train segmentation` and `smearscope export`: help, a real run, and clear one-line
errors (missing data folder, unwritable output, corrupt checkpoint) instead of tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from model_fixtures import tiny_model  # noqa: F401  (session fixture)
from runtime.contracts.modelcard import load_card
from smearscope.cli import cli

TINY = ["--base-width", "4", "--depth", "2", "--crop", "64", "--synthetic-frames", "4", "--threads", "1",
        "--no-progress", "--target-rbc-px", "24"]


def _fails_cleanly(result, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    for needle in needles:
        assert needle in result.output, result.output


@pytest.mark.parametrize("args", [["train", "--help"], ["train", "segmentation", "--help"], ["export", "--help"]])
def test_help(cli_runner, args):
    result = cli_runner.invoke(cli, args)
    assert result.exit_code == 0 and "Usage:" in result.output


def test_train_then_resume_on_synthetic(cli_runner, tmp_path):
    out = tmp_path / "run"
    result = cli_runner.invoke(cli, ["train", "segmentation", "--data", "synthetic", "--out", str(out),
                                     "--steps", "2", *TINY])
    assert result.exit_code == 0, result.output
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    history = json.loads((out / "metrics.json").read_text())
    assert history[0]["step"] == 2 and "rbc" in history[0]["val"]["per_class"]
    assert "step 2 " in result.output and "best checkpoint" in result.output
    resumed = cli_runner.invoke(cli, ["train", "segmentation", "--data", "synthetic", "--out", str(out),
                                      "--steps", "4", "--resume", str(out / "last.pt"), *TINY])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed" in resumed.output and "step 4 " in resumed.output


def test_train_on_real_smears_uses_the_cached_crops(cli_runner, tmp_path, shared_data):
    """The TXL-PBC path: cache built beside --out, val frames picked from the val split, card-ready checkpoint."""
    from training.checkpoint import load_checkpoint

    out = tmp_path / "run"
    result = cli_runner.invoke(cli, ["train", "segmentation", "--data", str(shared_data / "txl_pbc"), "--out",
                                     str(out), "--steps", "1", "--val-images", "2", "--base-width", "4",
                                     "--depth", "2", "--crop", "64", "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "validation: 2 of 288" in result.output
    assert any((tmp_path / "cache").glob("train-d32-*.npz"))
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt.training_data["train"]["split"] == "train" and ckpt.training_data["val"]["split"] == "val"
    assert ckpt.training_data["train"]["trainer"] == "smearscope train segmentation"
    held = cli_runner.invoke(cli, ["train", "segmentation", "--data", str(shared_data / "txl_pbc"), "--out",
                                   str(tmp_path / "held"), "--steps", "1", "--val-images", "2", "--base-width", "4",
                                   "--depth", "2", "--crop", "64", "--threads", "1", "--no-progress",
                                   "--holdout", "1000"])  # the same cache: trains on 8 frames, validates on 1,000
    assert held.exit_code == 0, held.output
    assert "on 8 txl_pbc frames (validation: 2 of 1000 held-out train)" in held.output
    data = load_checkpoint(tmp_path / "held" / "best.pt").training_data
    assert data["train"]["frames"] == 8 and data["val"]["split"] == "train" and data["val"]["part"] == "held out"


def test_train_a_quarter_scale_stem_and_refuse_it_for_the_full_resolution_unet(cli_runner, tmp_path):
    from training.checkpoint import load_checkpoint

    out = tmp_path / "four"
    result = cli_runner.invoke(cli, ["train", "segmentation", "--data", "synthetic", "--out", str(out),
                                     "--steps", "1", "--stem-stride", "4", *TINY])
    assert result.exit_code == 0, result.output
    assert "'stem_stride': 4" in result.output
    assert load_checkpoint(out / "best.pt").build().stride == 16
    refused = cli_runner.invoke(cli, ["train", "segmentation", "--data", "synthetic", "--out", str(tmp_path / "u"),
                                      "--steps", "1", "--arch", "unet", "--stem-stride", "4", *TINY])
    _fails_cleanly(refused, "--stem-stride 4", "lite_unet")
    too_deep = cli_runner.invoke(cli, ["train", "segmentation", "--data", "synthetic", "--out", str(tmp_path / "d"),
                                       "--steps", "1", "--stem-stride", "4", *TINY[:2], "--depth", "3", *TINY[4:]])
    _fails_cleanly(too_deep, "stride 32 exceeds the preprocessing stride 16")


def test_train_needs_a_budget(cli_runner, tmp_path):
    result = cli_runner.invoke(cli, ["train", "segmentation", "--data", "synthetic", "--out", str(tmp_path / "o"),
                                     *TINY])
    _fails_cleanly(result, "budget")


def test_train_missing_data_folder(cli_runner, tmp_path):
    result = cli_runner.invoke(cli, ["train", "segmentation", "--data", str(tmp_path / "nowhere"),
                                     "--out", str(tmp_path / "out"), "--steps", "1", *TINY])
    _fails_cleanly(result, "nowhere", "does not exist")


def test_train_unwritable_output(cli_runner, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli_runner.invoke(cli, ["train", "segmentation", "--data", "synthetic", "--out", str(blocker / "run"),
                                     "--steps", "1", *TINY])
    _fails_cleanly(result, "not writable")


def test_train_corrupt_resume_checkpoint(cli_runner, tmp_path):
    junk = tmp_path / "last.pt"
    junk.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    result = cli_runner.invoke(cli, ["train", "segmentation", "--data", "synthetic", "--out", str(tmp_path / "o"),
                                     "--steps", "1", "--resume", str(junk), *TINY])
    _fails_cleanly(result, "last.pt", "not a readable checkpoint")


def test_export_corrupt_and_missing_checkpoint(cli_runner, tmp_path):
    junk = tmp_path / "best.pt"
    junk.write_bytes(b"not a zip, not a pickle")
    result = cli_runner.invoke(cli, ["export", "--checkpoint", str(junk), "--out-dir", str(tmp_path), "--name", "m"])
    _fails_cleanly(result, "best.pt", "not a readable checkpoint")
    result = cli_runner.invoke(cli, ["export", "--checkpoint", str(tmp_path / "gone.pt"), "--out-dir", str(tmp_path),
                                     "--name", "m"])
    _fails_cleanly(result, "gone.pt", "does not exist")


def test_export_writes_validated_models_and_cards(cli_runner, tmp_path, tiny_model):
    checkpoint = tiny_model.int8.parent / "train" / "best.pt"
    out = tmp_path / "models"
    # Default data for a synthetic-trained checkpoint: synthetic calibration and validation frames.
    result = cli_runner.invoke(cli, ["export", "--checkpoint", str(checkpoint), "--out-dir", str(out),
                                     "--name", "seg-tiny", "--version", "0.0.1", "--calibration-frames", "4",
                                     "--validation-frames", "4"])
    assert result.exit_code == 0, result.output
    for suffix in ("fp32", "int8"):
        card = load_card(out / f"seg-tiny.{suffix}.onnx")
        assert card.name == "seg-tiny" and card.version == "0.0.1"
    assert "0 float" in result.output and "Dice fp32" in result.output


def test_export_unwritable_output_and_bad_name(cli_runner, tmp_path, tiny_model):
    checkpoint = tiny_model.int8.parent / "train" / "best.pt"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli_runner.invoke(cli, ["export", "--checkpoint", str(checkpoint), "--out-dir", str(blocker / "m"),
                                     "--name", "m"])
    _fails_cleanly(result, "cannot create output folder")
    result = cli_runner.invoke(cli, ["export", "--checkpoint", str(checkpoint), "--out-dir", str(tmp_path),
                                     "--name", "../escape"])
    _fails_cleanly(result, "plain file name")


def test_console_script_prints_one_line_not_a_traceback(tmp_path):
    junk = tmp_path / "broken.pt"
    junk.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "smearscope", "export", "--checkpoint", str(junk),
                           "--out-dir", str(tmp_path), "--name", "m"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "broken.pt" in proc.stderr and "empty" in proc.stderr
