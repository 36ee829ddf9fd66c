"""Hostile input everywhere: each kind ends cleanly and loses nothing.

Clean means: the command exits 2 (usage, config, model file) or 1 (data), prints the problem as
one `error:` line naming the input, and no traceback; a library call returns its refusal instead of
raising. Nothing lost means: the good inputs given alongside the bad ones are still processed.
The commands run in-process through click's CliRunner on the shipped models.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.contracts.imageio import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from runtime.contracts.modelcard import sha256_file
from smearscope.cli import cli

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "segmentation.int8.onnx"
UM_PER_PX = 0.25  # the synthetic smears' scale


def assert_clean(result, code: int, needle: str) -> str:
    """Exit `code`, exactly one error line and it names `needle`, no traceback; returns that line."""
    out = result.output
    assert result.exit_code == code, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out and "internal error" not in out, out
    errors = [line for line in out.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1, out
    assert needle in errors[0], out
    return errors[0]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int, rows: int = 1) -> bytes:
    """A well-formed PNG header for width x height with `rows` rows of real data (a decompression bomb
    when rows is small)."""
    idat = zlib.compress(b"\x00" * (width * 3 + 1) * rows, 9)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xda\x00\x02" + b"\x00" * 64 + b"\xff\xd9"


def bmp_claiming(width: int, height: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)


def tiff_claiming(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (277, 3, 1, 3)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def webp_claiming(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def smear_image() -> np.ndarray:
    from runtime.capture.synthetic import generate_smear

    return generate_smear(3, height=240, width=320, um_per_px=UM_PER_PX).image


# --------------------------------------------------------------------------------------------
# Images: analyze over every hostile file at once, with two good ones among them

IMAGE_KINDS: dict[str, tuple[str, str]] = {
    # kind: (file name, what its error line must say)
    "fifo": ("fifo.png", "not a regular file"),
    "dev_zero": ("/dev/zero", "/dev/zero: not a regular file"),
    "directory": ("folder.png", "is a folder, not a file"),
    "missing": ("missing.png", "file does not exist"),
    "empty": ("empty.png", "file is empty"),
    "text_as_png": ("text.png", "not a readable image"),
    "truncated_png": ("truncated.png", "PNG file is truncated"),
    "truncated_jpeg": ("truncated.jpg", "JPEG file is truncated"),
    "corrupt_jpeg_middle": ("damaged.jpg", "corrupt JPEG data (Corrupt JPEG data:"),
    "png_bomb_30000": ("bomb.png", "30000x30000 (900.0 megapixels), more than the 24-megapixel limit"),
    "jpeg_header_20000": ("huge.jpg", "20000x20000"),
    "bmp_header_50000": ("huge.bmp", "50000x40000"),
    "tiff_header_40000": ("huge.tif", "40000x40000"),
    "webp_header_16000": ("huge.webp", "16000x16000"),
    "field_8000x6000": ("field8000.png", "8000x6000 (48.0 megapixels)"),
    "field_6000x4500": ("field6000.png", "6000x4500 (27.0 megapixels), more than the 24-megapixel limit"),
    "zero_size_header": ("zero.png", "0x10 pixels"),
    "corrupt_png_data": ("corrupt.png", "corrupt PNG data) (libpng error: IDAT: invalid stored block lengths)"),
    "jpeg_without_frame": ("noframe.jpg", "corrupt JPEG header"),
    "oversize_file": ("sparse.png", f"file is {MAX_IMAGE_BYTES + 1} bytes, more than the limit of {MAX_IMAGE_BYTES}"),
    "greyscale": ("grey.png", "1 channel"),
    "rgba": ("rgba.png", "4 channels"),
    "gif_unsupported": ("anim.gif", "unsupported format"),
}


def _write_hostile_images(folder: Path) -> dict[str, Path]:
    paths = {kind: (Path(name) if name.startswith("/") else folder / name) for kind, (name, _) in IMAGE_KINDS.items()}
    os.mkfifo(paths["fifo"])
    paths["directory"].mkdir()
    paths["empty"].write_bytes(b"")
    paths["text_as_png"].write_text("this is not an image\n")
    ok, png = cv2.imencode(".png", smear_image())
    paths["truncated_png"].write_bytes(png.tobytes()[: len(png) // 2])
    ok, jpg = cv2.imencode(".jpg", smear_image())
    paths["truncated_jpeg"].write_bytes(jpg.tobytes()[: len(jpg) // 2])
    damaged = bytearray(jpg.tobytes())
    damaged[len(damaged) // 3: len(damaged) // 3 + 400] = b"\x37" * 400  # would decode half grey, silently
    paths["corrupt_jpeg_middle"].write_bytes(bytes(damaged))
    paths["png_bomb_30000"].write_bytes(png_claiming(30000, 30000))
    paths["jpeg_header_20000"].write_bytes(jpeg_claiming(20000, 20000))
    paths["bmp_header_50000"].write_bytes(bmp_claiming(50000, 40000))
    paths["tiff_header_40000"].write_bytes(tiff_claiming(40000, 40000))
    paths["webp_header_16000"].write_bytes(webp_claiming(16000, 16000))
    paths["field_8000x6000"].write_bytes(png_claiming(8000, 6000, rows=6000))  # a complete, real image
    paths["field_6000x4500"].write_bytes(png_claiming(6000, 4500, rows=4500))  # just over the limit
    paths["zero_size_header"].write_bytes(png_claiming(0, 10))
    paths["corrupt_png_data"].write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
        + _chunk(b"IDAT", b"\x78\x9c garbage, not deflate") + _chunk(b"IEND", b""))
    paths["jpeg_without_frame"].write_bytes(b"\xff\xd8\xff\xe0\x00\x04ab\xff\xd9")
    with open(paths["oversize_file"], "wb") as fh:  # sparse: no disk used
        fh.write(png.tobytes()[:64])
        fh.truncate(MAX_IMAGE_BYTES + 1)
    cv2.imwrite(str(paths["greyscale"]), np.full((32, 32), 128, np.uint8))
    cv2.imwrite(str(paths["rgba"]), np.zeros((32, 32, 4), np.uint8))
    paths["gif_unsupported"].write_bytes(b"GIF89a\x10\x00\x10\x00" + b"\x00" * 20)
    return paths


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    """One `analyze` over the hostile files, a good smear and a noise frame (one model load)."""
    from click.testing import CliRunner

    folder = tmp_path_factory.mktemp("hostile-images")
    paths = _write_hostile_images(folder)
    good, noise = folder / "good.png", folder / "noise.png"
    cv2.imwrite(str(good), smear_image())
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    out = folder / "out"
    args = ["analyze", *map(str, paths.values()), str(good), str(noise), "--out", str(out),
            "--um-per-px", str(UM_PER_PX), "--threads", "2"]
    return CliRunner().invoke(cli, args), paths, out


def test_images_bad_ones_reported_good_ones_kept(analyzed):
    result, paths, out = analyzed
    assert result.exit_code == 1, result.output  # 1: data; the good files were still analysed
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert f"{len(paths) + 2 - len(paths)} of {len(paths) + 2} image(s) analysed" in result.output
    assert json.loads((out / "good.json").read_text())["quality"]["accepted"] is True
    noise = json.loads((out / "noise.json").read_text())  # kept, but not believed
    assert noise["quality"]["accepted"] is False
    assert any(r.startswith("implausible segmentation:") for r in noise["quality"]["reasons"])


@pytest.mark.parametrize("kind", list(IMAGE_KINDS))
def test_image_kind(analyzed, kind):
    result, paths, _out = analyzed
    lines = [line for line in result.output.splitlines() if line.startswith(f"error: {paths[kind]}:")]
    assert len(lines) == 1, result.output
    assert IMAGE_KINDS[kind][1] in lines[0], lines[0]


def test_decoder_noise_stays_in_the_one_line(tmp_path, capfd):
    """The C decoders' own stderr lines are folded into the error; other stderr output passes."""
    from runtime.contracts.errors import ImageError
    from runtime.contracts.imageio import decoder_messages, read_image

    paths = _write_hostile_images(tmp_path)
    for kind in ("corrupt_png_data", "corrupt_jpeg_middle"):
        with pytest.raises(ImageError):
            read_image(paths[kind])
    with decoder_messages():
        os.write(2, b"a log line from another thread\n")
    err = capfd.readouterr().err
    assert "libpng" not in err and "Corrupt JPEG" not in err
    assert "a log line from another thread" in err


def test_every_image_file_is_read_through_imageio():
    """The limits hold only if no other module decodes image files."""
    offenders = []
    product = ("runtime", "server", "smearscope", "training", "export", "benchmarks", "firmware_bridge")
    for path in (p for top in product for p in (REPO / top).rglob("*.py")):
        text = path.read_text()
        if path.name == "imageio.py":
            continue
        if "cv2.imread(" in text or "Image.open(" in text:
            offenders.append(str(path.relative_to(REPO)))
        if "cv2.imdecode(" in text and "cv2.imencode(" not in text:  # an in-memory round trip is fine
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_opencv_pixel_limit_is_a_second_fence():
    assert os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS") == str(MAX_IMAGE_PIXELS)


# --------------------------------------------------------------------------------------------
# analyze: options and model files

@pytest.fixture(scope="module")
def good_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "smear.png"
    cv2.imwrite(str(path), smear_image())
    return path


@pytest.mark.parametrize("args,code,needle", [
    (["--um-per-px", "0"], 2, "--um-per-px: must be a positive finite number"),
    (["--um-per-px", "-1"], 2, "--um-per-px: must be a positive finite number"),
    (["--um-per-px", "nan"], 2, "--um-per-px: must be a positive finite number"),
    (["--um-per-px", "inf"], 2, "--um-per-px: must be a positive finite number"),
    (["--um-per-px", "1e9"], 2, "is not a plausible microscope calibration"),
    (["--um-per-px", "2"], 2, "the model card rescales by 0.1-4x to 32 px, so it takes 0.0234-0.938 µm/px"),
    (["--um-per-px", "abc"], 2, "'abc' is not a valid float"),
    (["--um-per-px", "0.25", "--um-per-px", "0.3"], 2, "option --um-per-px is given twice"),
    (["--threads", "-1"], 2, "--threads"),
    (["--threads", "100000"], 2, "--threads"),
], ids=["um0", "um-neg", "um-nan", "um-inf", "um-huge", "um-outside-card", "um-text", "um-repeated",
        "threads-neg", "threads-absurd"])
def test_analyze_options(cli_runner, tmp_path, good_image, args, code, needle):
    result = cli_runner.invoke(cli, ["analyze", str(good_image), "--out", str(tmp_path), *args])
    assert_clean(result, code, needle)
    assert not list(tmp_path.glob("*.json"))


def test_analyze_unwritable_output(cli_runner, good_image):
    result = cli_runner.invoke(cli, ["analyze", str(good_image), "--out", "/proc/hostile-out", "--um-per-px", "0.25"])
    assert_clean(result, 1, "/proc/hostile-out: cannot create output folder")


def test_diagnose_batch_unwritable_output(cli_runner, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("fpg_mmol_l\n5.0\n")
    result = cli_runner.invoke(cli, ["diagnose", "--no-model", "--batch", str(src), "--out", "/proc/hostile/o.csv"])
    assert_clean(result, 1, "/proc/hostile")


def _nan_or_narrow_model(folder: Path, name: str, fill: float, classes: int) -> Path:
    """A real ONNX model (1x1 convolution) with the shipped card's preprocessing: its weights are
    `fill` and it has `classes` output channels."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [classes, 3, 1, 1], [fill] * (classes * 3))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["logits"])], name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes, "h", "w"])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    card = json.loads(SHIPPED.with_suffix(".json").read_text())
    card.update(sha256=sha256_file(path), output_names=["logits"], name=name)
    card.pop("inference", None)
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def _model_kind(kind: str, folder: Path) -> Path:
    card = json.loads(SHIPPED.with_suffix(".json").read_text())
    model = folder / "m.onnx"
    if kind == "nan_outputs":
        return _nan_or_narrow_model(folder, "nan", float("nan"), 4)
    if kind == "wrong_outputs":
        return _nan_or_narrow_model(folder, "narrow", 0.5, 3)
    if kind == "missing_model":
        return folder / "absent.onnx"
    if kind == "model_is_directory":
        model.mkdir()
        return model
    shutil.copyfile(SHIPPED, model)
    if kind == "bad_sha":
        card["sha256"] = "0" * 64
    elif kind == "truncated_onnx":
        model.write_bytes(SHIPPED.read_bytes()[:4096])
        card["sha256"] = sha256_file(model)
    elif kind == "garbage_onnx":
        model.write_bytes(b"\x00not a protobuf\xff" * 100)
        card["sha256"] = sha256_file(model)
    elif kind == "card_missing":
        return model
    elif kind == "card_garbage":
        model.with_suffix(".json").write_text("{ this is not json")
        return model
    elif kind == "card_a_list":
        model.with_suffix(".json").write_text("[1, 2, 3]")
        return model
    elif kind == "card_bad_preprocess":
        card["preprocess"] = {"stride": 3}
    elif kind == "card_wrong_classes":
        card["classes"] = ["background", "rbc"]
    elif kind == "card_opset_text":
        card["opset"] = "seventeen"
    elif kind == "card_sha_number":
        card["sha256"] = 12345
    model.with_suffix(".json").write_text(json.dumps(card))
    return model


@pytest.mark.parametrize("kind,code,needle", [
    ("missing_model", 2, "absent.onnx: model file does not exist"),
    ("model_is_directory", 2, "m.onnx: is a directory"),
    ("bad_sha", 2, "does not match its card"),
    ("truncated_onnx", 2, "m.onnx"),
    ("garbage_onnx", 2, "m.onnx"),
    ("card_missing", 2, "no model card"),
    ("card_garbage", 2, "m.json"),
    ("card_a_list", 2, "m.json: a model card is a JSON object, got list"),
    ("card_bad_preprocess", 2, "m.json: preprocess.stride: must be a power of two"),
    ("card_opset_text", 2, "m.json: invalid literal for int()"),
    ("card_sha_number", 2, "m.json: sha256 must be 64 lowercase hex digits"),
    ("card_wrong_classes", 2, "classes"),
    ("wrong_outputs", 2, "expected 1x4xHxW class scores"),
    ("nan_outputs", 2, "NaN or infinite value(s)"),
])
def test_model_files(cli_runner, tmp_path, good_image, kind, code, needle):
    model = _model_kind(kind, tmp_path)
    out = tmp_path / "out"
    result = cli_runner.invoke(cli, ["analyze", str(good_image), "--model", str(model), "--out", str(out),
                                     "--um-per-px", str(UM_PER_PX)])
    assert_clean(result, code, needle)
    assert not list(out.glob("*.json"))  # a broken model never yields an "ok" result


# --------------------------------------------------------------------------------------------
# run: config, calibration, samples, lab values, worklists (all refused before the first capture)

def _device_config(tmp_path: Path, extra: str = "", sample: str = "") -> Path:
    path = tmp_path / "device.yaml"
    path.write_text(textwrap.dedent(f"""
        device_id: scope-hostile
        model: {{path: {SHIPPED}, providers: [cpu], threads: 1, warmup: false}}
        camera: {{type: synthetic, width: 160, height: 120}}
        trigger: {{type: interval, seconds: 0.01, count: 1}}
        publisher: {{type: file, dir: {tmp_path / 'results'}}}
    """) + sample + extra)
    return path


def _worklist(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


RUN_KINDS = {
    "config_missing": (lambda t: ["--config", str(t / "nope.yaml")], 2, "nope.yaml"),
    "config_garbage_yaml": (lambda t: ["--config", _worklist(t, "bad.yaml", "a: [1, 2\n  b: }")], 2, "bad.yaml"),
    "config_unknown_key": (lambda t: ["--config", str(_device_config(t, "colour: red\n"))], 2, "colour"),
    "config_um_per_px_zero": (lambda t: ["--config", str(_device_config(t, "um_per_px: 0\n"))], 2, "um_per_px"),
    "config_um_per_px_outside_card": (lambda t: ["--config", str(_device_config(t, "um_per_px: 3.0\n"))], 2,
                                      "the model card rescales"),
    "config_um_per_px_absurd": (lambda t: ["--config", str(_device_config(t, "um_per_px: 1.0e+6\n"))], 2,
                                "not a plausible microscope calibration"),
    "lab_without_sample": (lambda t: ["--config", str(_device_config(t)), "--lab", "fpg_mmol_l=7.1"], 2,
                           "lab values need a sample"),
    "config_labs_without_sample": (lambda t: ["--config", str(_device_config(t, sample="sample: {labs: {fpg_mmol_l: 7}}\n"))],
                                   2, "lab values need a sample"),
    "lab_unit_mistake": (lambda t: ["--config", str(_device_config(t)), "--sample-id", "S1", "--lab", "fpg_mg_dl=7"], 2,
                         "did you mean 7 mmol/L?"),
    "lab_hba1c_unit_mistake": (lambda t: ["--config", str(_device_config(t)), "--sample-id", "S1", "--lab",
                                          "hba1c_pct=48"], 2, "did you mean 48 mmol/mol?"),
    "lab_nan": (lambda t: ["--config", str(_device_config(t)), "--sample-id", "S1", "--lab", "hba1c_pct=nan"], 2,
                "must be a finite number"),
    "lab_unknown_name_infinite": (lambda t: ["--config", str(_device_config(t)), "--sample-id", "S1", "--lab",
                                             "note=inf"], 2, "note: must be a finite number"),
    "lab_no_value": (lambda t: ["--config", str(_device_config(t)), "--sample-id", "S1", "--lab", "fpg"], 2,
                     "expected NAME=VALUE"),
    "lab_with_worklist": (lambda t: ["--config", str(_device_config(t)), "--worklist",
                                     _worklist(t, "w.csv", "sample_id\nA\n"), "--lab", "age=50"], 2, "--lab belongs"),
    "sample_id_repeated": (lambda t: ["--config", str(_device_config(t)), "--sample-id", "A", "--sample-id", "B"], 2,
                           "option --sample-id is given twice"),
    "fields_zero": (lambda t: ["--config", str(_device_config(t)), "--sample-id", "A", "--fields", "0"], 2, "--fields"),
    "worklist_missing": (lambda t: ["--config", str(_device_config(t)), "--worklist", str(t / "none.csv")], 1,
                         "none.csv"),
    "worklist_duplicate_column": (lambda t: ["--config", str(_device_config(t)), "--worklist",
                                             _worklist(t, "dup.csv", "sample_id,fpg_mmol_l,fpg_mmol_l\nA,5,9\n")], 1,
                                  "column 'fpg_mmol_l' appears twice"),
    "worklist_extra_cells": (lambda t: ["--config", str(_device_config(t)), "--worklist",
                                        _worklist(t, "extra.csv", "sample_id,fpg_mmol_l\nA,5\nB,6,7.5\n")], 1,
                             "line 3 has 3 cells, more than the 2 columns"),
    "worklist_implausible_lab": (lambda t: ["--config", str(_device_config(t)), "--worklist",
                                            _worklist(t, "lab.csv", "sample_id,fpg_mmol_l\nA,126\n")], 1,
                                 "did you mean 126 mg/dL?"),
    "worklist_json_nan": (lambda t: ["--config", str(_device_config(t)), "--worklist",
                                     _worklist(t, "nan.json", '[{"sample_id": "A", "labs": {"age": NaN}}]')], 1,
                          "NaN is not a JSON number"),
    "worklist_json_duplicate_key": (lambda t: ["--config", str(_device_config(t)), "--worklist",
                                               _worklist(t, "dup.json", '[{"sample_id": "A", "sample_id": "B"}]')], 1,
                                    "key 'sample_id' appears twice"),
    "worklist_not_utf8": (lambda t: ["--config", str(_device_config(t)), "--worklist",
                                     str(_bytes(t / "latin.csv", b"sample_id\n\xff\xfe\n"))], 1, "not UTF-8"),
}


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", list(RUN_KINDS))
def test_run(cli_runner, tmp_path, kind):
    make_args, code, needle = RUN_KINDS[kind]
    result = cli_runner.invoke(cli, ["run", *make_args(tmp_path)])
    assert_clean(result, code, needle)
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").glob("*.json"))


def test_run_with_a_nan_model_publishes_no_ok_result(cli_runner, tmp_path, caplog):
    model = _nan_or_narrow_model(tmp_path, "nan", float("nan"), 4)
    config = tmp_path / "nan.yaml"
    config.write_text(_device_config(tmp_path).read_text().replace(str(SHIPPED), str(model)))
    result = cli_runner.invoke(cli, ["run", "--config", str(config), "--sample-id", "S1"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "1 capture(s): 0 published, 1 rejected or failed" in result.output
    assert "NaN or infinite value(s)" in caplog.text  # the device's log and status LED say why
    assert not list((tmp_path / "results").glob("*.json"))


def test_an_implausible_order_leaves_the_sample_as_it_was(tmp_path):
    from runtime.contracts.config import load_config
    from runtime.device.assembly import build_device, order_to_event

    setup = build_device(load_config(_device_config(tmp_path, sample="sample: {sample_id: KEEP}\n")))
    try:
        order = {"sample": {"sample_id": "NEW", "labs": {"hba1c_pct": 48}}, "fields": 2}
        setup.device._switch_sample(order_to_event(order))
        assert setup.device.samples.current.sample_id == "KEEP"
        setup.device._switch_sample(order_to_event({"sample": {"sample_id": "NEW", "labs": {"hba1c_pct": 6.1}}}))
        assert setup.device.samples.current.sample_id == "NEW"
    finally:
        setup.stop()


@pytest.mark.parametrize("text,needle", [
    ("a: [1, 2\n", "not valid YAML"),
    ("- just\n- a list\n", "device.yaml"),
    ("device_id: 'has spaces'\n", "device_id"),
    ("model: {threads: many}\n", "model.threads"),
], ids=["garbage", "not-a-mapping", "bad-device-id", "threads-text"])
def test_config_check(cli_runner, tmp_path, text, needle):
    path = tmp_path / "device.yaml"
    path.write_text(text)
    assert_clean(cli_runner.invoke(cli, ["config", "check", str(path)]), 2, needle)


# --------------------------------------------------------------------------------------------
# diagnose: options, units and the batch CSV

@pytest.mark.parametrize("args,needle", [
    (["--fpg", "abc"], "--fpg: not a number: 'abc'"),
    (["--fpg", "7 mg/dL"], "--fpg: fpg 7 mg/dL is not plausible (expected 18-1081 mg/dL): did you mean 7 mmol/L?"),
    (["--fpg", "126"], "did you mean 126 mg/dL?"),
    (["--hba1c", "48"], "did you mean 48 mmol/mol?"),
    (["--hba1c", "4", "--hba1c-unit", "mmol/mol"], "did you mean 4 %?"),
    (["--fpg", "nan"], "--fpg: not a finite number"),
    (["--fpg", "inf"], "--fpg: not a finite number"),
    (["--fpg", "-5"], "--fpg: fpg -5 mmol/L is not plausible"),
    (["--age", "200", "--fpg", "5"], "--age: age 200 years is not plausible"),
    (["--haemoglobin", "12", "--hba1c", "6"], "did you mean 12 g/dL (120 g/L)?"),
    (["--sex", "X", "--fpg", "5"], "--sex: unknown sex 'X'"),
    (["--pregnant", "maybe", "--fpg", "5"], "--pregnant: expected 0 or 1"),
    (["--fpg", "5", "--glucose-unit", "furlongs"], "unknown unit 'furlongs'"),
    (["--fpg", "5 g/L"], "--fpg: unknown unit 'g/L'"),
    (["--fpg", "5", "--fpg", "9"], "option --fpg is given twice"),
    (["--fpg", "5", "--guideline", "easd"], "'easd' is not one of"),
    ([], "give at least one input"),
    (["--batch", "x.csv"], "x.csv"),
], ids=["text", "mg-dl-as-mmol", "mmol-as-mg", "hba1c-pct-as-mmol", "hba1c-mmol-as-pct", "nan", "inf", "negative",
        "age", "haemoglobin-g-dl", "sex", "pregnant", "unit-option", "unit-inline", "repeated", "guideline",
        "nothing", "batch-missing"])
def test_diagnose_options(cli_runner, args, needle):
    assert_clean(cli_runner.invoke(cli, ["diagnose", "--no-model", *args]), 2, needle)


def test_diagnose_model_file(cli_runner, tmp_path):
    bad = tmp_path / "d.onnx"
    bad.write_bytes(b"garbage")
    assert_clean(cli_runner.invoke(cli, ["diagnose", "--fpg", "6", "--model", str(bad)]), 2, "d.onnx")


BATCH_KINDS = {
    "duplicate_column": ("fpg_mmol_l,age,fpg_mmol_l\n5,50,9\n", "column 'fpg_mmol_l' appears twice"),
    "extra_cells": ("fpg_mmol_l,age\n5,50\n6,40,7.5\n", "line 3 has 3 cells, more than the 2 columns"),
    "missing_cells": ("fpg_mmol_l,age\n5\n", "line 2 has 1 cells, fewer than the 2 columns"),
    "blank_column_name": ("fpg_mmol_l,,age\n5,1,50\n", "header column 2 has no name"),
    "unknown_unit_column": ("fpg_g_l\n1.1\n", "fpg_g_l"),
    "empty_file": ("", "CSV file is empty"),
    "not_utf8": (b"fpg_mmol_l\n\xff\xfe\x00\n", "binary content"),
    "binary_garbage": (bytes(range(256)) * 4, "in.csv"),
}


@pytest.mark.parametrize("kind", list(BATCH_KINDS))
def test_diagnose_batch_file(cli_runner, tmp_path, kind):
    text, needle = BATCH_KINDS[kind]
    src = tmp_path / "in.csv"
    src.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = cli_runner.invoke(cli, ["diagnose", "--no-model", "--batch", str(src), "--out", str(tmp_path / "o.csv")])
    assert_clean(result, 2, needle)
    assert not (tmp_path / "o.csv").exists()  # nothing half-written


def test_diagnose_batch_fifo(cli_runner, tmp_path):
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    result = cli_runner.invoke(cli, ["diagnose", "--no-model", "--batch", str(fifo), "--out", str(tmp_path / "o.csv")])
    assert_clean(result, 2, "not a regular file")


def test_diagnose_batch_bad_rows_lose_nothing(cli_runner, tmp_path):
    """Implausible rows are reported per row; every row, good or bad, is in the output."""
    src, out = tmp_path / "in.csv", tmp_path / "o.csv"
    src.write_text("ref,fpg_mg_dl,hba1c_pct,fpg_mmol_l\na,7,,\nb,126,6.8,\nc,,48,\nd,,,126\ne,,5.1,\n")
    result = cli_runner.invoke(cli, ["diagnose", "--batch", str(src), "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    rows = list(__import__("csv").DictReader(out.open()))
    assert [r["ref"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert "did you mean 7 mmol/L?" in rows[0]["error"] and "did you mean 48 mmol/mol?" in rows[2]["error"]
    assert "did you mean 126 mg/dL?" in rows[3]["error"]
    assert rows[1]["guideline_status"] == "diabetes" and rows[4]["guideline_status"] == "normal"
    assert "error: row 1:" in result.output and "error: row 4:" in result.output


# --------------------------------------------------------------------------------------------
# What the diagnosis says it saw

def test_network_states_inputs_it_could_not_use():
    from runtime.diagnosis import DiagnosisNetwork, diagnose

    report = diagnose({"fpg_mmol_l": 12.0, "age": 50, "bmi": 31}, "ada", network=DiagnosisNetwork.load()).to_dict()
    assert report["network"] == {"inputs_used": ["age", "bmi"], "inputs_not_used": ["fpg"]}
    assert any("rests on fasting plasma glucose 12 mmol/L, which the network did not see" in f for f in report["flags"])
    assert report["confirmation_reason"].startswith("confirm: diabetes rests on one test (fasting plasma glucose 12")


def test_console_shows_why_confirmation_is_needed(cli_runner):
    result = cli_runner.invoke(cli, ["diagnose", "--fpg", "7.4", "--hba1c", "6.1"])
    assert result.exit_code == 0, result.output
    assert "confirm: diabetes rests on one test (fasting plasma glucose 7.4 mmol/L >= 7 mmol/L)" in result.output
    assert "HbA1c 6.1 % below the diabetes cut-point (discordant)" in result.output
    assert "network (from hba1c; not seen: fpg)" in result.output


# --------------------------------------------------------------------------------------------
# The one plausibility table, as the server calls it

@pytest.mark.parametrize("name,value,unit,needle", [
    ("fpg_mmol_l", -50, None, "fpg -50 mmol/L is not plausible"),
    ("fpg", 7, "mg/dL", "did you mean 7 mmol/L?"),
    ("hba1c_pct", float("inf"), None, "not a finite number"),
    ("hba1c_pct", "6,5", None, "not a number"),
    ("fpg", 5, "g/L", "unknown unit 'g/L'"),
])
def test_check_lab_for_the_server(name, value, unit, needle):
    from runtime.contracts.plausible import check_lab

    problem = check_lab(name, value, unit)
    assert problem is not None and needle in problem
    assert check_lab("fpg_mmol_l", 6.1) is None and check_lab("operator_note", "x") is None


# --------------------------------------------------------------------------------------------
# Server messages (server.validation.check_message as it is): refused, never raised

TOPIC = "smearscope/v1/site-a/dev-1/results"


def _valid_result() -> dict:
    return {
        "schema": "result/1", "result_id": "01890f3e-7b1c-7abc-8def-0123456789ab", "device_id": "dev-1",
        "seq": 0, "created_at": "2026-01-01T00:00:00Z", "sample": {"sample_id": "s1", "patient_id": "p-1"},
        "model": {"name": "m", "version": "1", "sha256": "0" * 64}, "quality": {"accepted": True},
        "counts": {"rbc": 1, "wbc": 0, "platelet": 0},
        "area_pct": {"background": 90.0, "rbc": 10.0, "wbc": 0.0, "platelet": 0.0}, "timings_ms": {},
    }


SERVER_KINDS = {
    "not_utf8": (TOPIC, b"\xff\xfe{}", "not_utf8"),
    "not_json": (TOPIC, b"{not json", "not_json"),
    "nan": (TOPIC, json.dumps({**_valid_result(), "seq": float("nan")}).encode(), "not_json"),
    "infinity": (TOPIC, b'{"schema": "result/1", "seq": Infinity}', "not_json"),
    "duplicate_key": (TOPIC, b'{"schema": "result/1", "schema": "result/1"}', "not_json"),
    "deep_nesting": (TOPIC, b"[" * 100_000 + b"]" * 100_000, "not_json"),
    "too_large": (TOPIC, b" " * 2_000_000, "too_large"),
    "bad_topic": ("smearscope/v1/../results", json.dumps(_valid_result()).encode(), "bad_topic"),
    "status_topic": ("smearscope/v1/site-a/dev-1/status", json.dumps(_valid_result()).encode(), "bad_topic"),
    "top_level_array": (TOPIC, b"[1, 2]", "not_json"),
    "wrong_schema_version": (TOPIC, json.dumps({**_valid_result(), "schema": "result/9"}).encode(), "schema_version"),
    "negative_count": (TOPIC, json.dumps({**_valid_result(), "counts": {"rbc": -1, "wbc": 0, "platelet": 0}}).encode(),
                       "schema"),
    "device_mismatch": (TOPIC, json.dumps({**_valid_result(), "device_id": "dev-2"}).encode(), "device_mismatch"),
}


@pytest.mark.parametrize("kind", list(SERVER_KINDS))
def test_server_message(kind):
    from server.validation import Accepted, Rejected, check_message

    topic, payload, reason = SERVER_KINDS[kind]
    outcome = check_message(topic, payload, 1_000_000)
    assert isinstance(outcome, Rejected) and outcome.reason == reason, outcome
    good = check_message(TOPIC, json.dumps(_valid_result()).encode(), 1_000_000)
    assert isinstance(good, Accepted)  # the next message is unaffected


# --------------------------------------------------------------------------------------------
# Controller bytes: the wire decoder drops garbage and keeps the good frame after it

def _controller_garbage() -> dict[str, bytes]:
    from firmware_bridge import wire

    good = wire.encode_frame(wire.ACK, 1, b"\x07")
    flipped = bytearray(good)
    flipped[2] ^= 0x10
    return {
        "random_bytes": bytes(np.random.default_rng(1).integers(1, 256, 300, dtype=np.uint8)) + b"\x00",
        "overlong_run": b"\x55" * 5000 + b"\x00",
        "flipped_bit": bytes(flipped),
        "non_canonical_cobs": b"\x05\x01\x02\x00",
        "truncated_frame": good[:-3] + b"\x00",
        "only_delimiters": b"\x00" * 64,
        "zero_length_header": b"\x01\x01\x01\x00",
    }


@pytest.mark.parametrize("kind", list(_controller_garbage()))
def test_controller_bytes(kind):
    from firmware_bridge import wire

    garbage = _controller_garbage()[kind]
    good = wire.encode_frame(wire.ACK, 1, b"\x07")
    decoder = wire.FrameDecoder()
    frames = [f for i in range(0, len(garbage), 7) for f in decoder.feed(garbage[i:i + 7])]
    frames += decoder.feed(good)
    assert [(f.msg_type, f.seq, f.payload) for f in frames] == [(wire.ACK, 1, b"\x07")]


# --------------------------------------------------------------------------------------------
# patients: whole ids, so `show` finds what `list` printed; a bad database is one line

def test_patients_list_prints_whole_ids(cli_runner, tmp_path):
    from server.store import Store
    from server.validation import check_message

    long_id = "p-" + "a1b2c3d4" * 4
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.record(check_message(TOPIC, json.dumps({**_valid_result(), "sample": {"sample_id": "s1",
                                                                                 "patient_id": long_id}}).encode(),
                               1_000_000))
    store.close()
    listed = cli_runner.invoke(cli, ["patients", "list", "--database", f"sqlite:///{tmp_path / 'r.db'}"])
    assert listed.exit_code == 0 and long_id in listed.output, listed.output
    printed = listed.output.splitlines()[1].split()[0]
    shown = cli_runner.invoke(cli, ["patients", "show", printed, "--database", f"sqlite:///{tmp_path / 'r.db'}"])
    assert shown.exit_code == 0 and long_id in shown.output, shown.output


def test_patients_unknown_and_bad_database(cli_runner, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert_clean(cli_runner.invoke(cli, ["patients", "show", "p-nobody", "--database", url]), 1, "p-nobody")
    assert_clean(cli_runner.invoke(cli, ["patients", "list"]), 2, "give --config server.yaml or --database URL")
    assert_clean(cli_runner.invoke(cli, ["patients", "list", "--database", "foo://bar"]), 2, "unsupported URL")
    unreachable = cli_runner.invoke(cli, ["patients", "list", "--database", "postgresql://u:secret@127.0.0.1:1/x"])
    assert "secret" not in assert_clean(unreachable, 1, "database: cannot open")
    assert_clean(cli_runner.invoke(cli, ["patients", "list", "--database", "sqlite:////proc/no/x.db"]), 1,
                 "/proc/no: No such file or directory")
