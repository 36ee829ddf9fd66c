"""`smearscope analyze IMAGE...`: segment and count smear images from files, without a device."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Segmentation model (.onnx with its .json card beside it). "
                   "Default: the shipped models/segmentation.int8.onnx.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("analysis"),
              show_default=True, help="Folder for <stem>.json, <stem>.mask.png, <stem>.overlay.png and "
                                      "<stem>.gallery.png.")
@click.option("--um-per-px", type=float, default=None,
              help="Microscope calibration in µm per pixel: sets the scale directly and adds µm² areas "
                   "and cells per mm². Without it the red-cell size is measured from each image.")
@click.option("--threads", type=click.IntRange(min=0, max=256), default=0, show_default=True,
              help="ONNX Runtime CPU threads (0: one per core).")
def analyze(images: tuple[Path, ...], model_path: Path | None, out_dir: Path, um_per_px: float | None,
            threads: int) -> None:
    """Segment red cells, white cells and platelets in IMAGE files and count them.

    For each image, writes DIR/<stem>.json (counts, every cell with its class, centre, box, area,
    confidence and border contact, the review verdict, area percentages, quality, model name,
    version and sha256, per-stage timings), DIR/<stem>.mask.png (one channel of class indices 0
    background, 1 RBC, 2 WBC, 3 platelet, at the image's own size), DIR/<stem>.overlay.png (every
    cell outlined, white cells and platelets numbered, counts and legend in a panel beside the
    image) and DIR/<stem>.gallery.png (each white cell and platelet cropped, with its confidence).
    An image that cannot be read is reported and skipped; the others are still analysed. A blank,
    overexposed or cell-free image gives empty counts and a quality warning.
    """
    from runtime.contracts.errors import SmearscopeError
    from runtime.inference.session import SessionOptions
    from runtime.contracts.plausible import check_calibration
    from runtime.inference.model import SegmentationModel
    from smearscope.cli.entry import as_user_error

    try:
        model = SegmentationModel.load(model_path, SessionOptions(intra_op_threads=threads))
        if um_per_px is not None:  # refused before any image, naming the card's range
            check_calibration(um_per_px, model.card.preprocess, source="--um-per-px")
    except SmearscopeError as exc:
        raise as_user_error(exc) from None
    click.echo(f"model {model.card.name} {model.card.version} ({', '.join(model.loaded.providers)})", err=True)

    failures = _analyze_all(model, images, out_dir, um_per_px)
    done = len(images) - failures
    click.echo(f"{done} of {len(images)} image(s) analysed; results in {out_dir}/", err=True)
    if failures:
        raise SystemExit(1)


def _analyze_all(model, images: tuple[Path, ...], out_dir: Path, um_per_px: float | None) -> int:
    from runtime.analysis.analyzer import Analyzer
    from runtime.contracts.errors import ModelError, SmearscopeError

    analyzer = Analyzer(model)
    failures = 0
    used_stems: set[str] = set()
    click.echo(f"{'image':<32} {'RBC':>5} {'WBC':>4} {'PLT':>4} {'RBC area':>9}  {'ms':>6}  quality")
    for path in images:
        stem = _unique_stem(path, used_stems)
        try:
            record = _analyze_one(analyzer, path, out_dir, stem, um_per_px)
        except ModelError:
            raise  # a broken model fails every image: stop at once (exit 2), nothing written from it
        except SmearscopeError as exc:
            failures += 1
            click.secho(f"error: {exc}", fg="red", err=True)
            continue
        counts, quality = record["counts"], record["quality"]
        verdict = "ok" if quality["accepted"] else "rejected: " + "; ".join(quality["reasons"])
        click.echo(f"{_short(path.name, 32):<32} {counts['rbc']:>5} {counts['wbc']:>4} {counts['platelet']:>4} "
                   f"{record['area_pct']['rbc']:>8.1f}%  {record['timings_ms']['total']:>6.0f}  {verdict}")
        if not quality["accepted"]:
            click.secho(f"warning: {path}: {'; '.join(quality['reasons'])}", fg="yellow", err=True)
    return failures


def _analyze_one(analyzer, path: Path, out_dir: Path, stem: str, um_per_px: float | None) -> dict:
    import json

    from runtime.analysis.overlay import render_gallery, render_overlay
    from runtime.analysis.review import review_analysis
    from runtime.contracts.imageio import read_image, write_image

    frame = read_image(path)
    analysis = analyzer.analyze(frame, um_per_px=um_per_px, source=str(path))
    review = review_analysis(analysis)
    record = {
        "image": str(path),
        "size": {"width": int(frame.shape[1]), "height": int(frame.shape[0])},
        "model": {**analyzer.model.info(), "path": str(analyzer.model.path)},
        "quality": analysis.quality_dict(),
        "counts": analysis.counts,
        "cells": [_cell_record(c) for c in analysis.cells.ordered()],
        "review": review,
        "area_pct": analysis.area_pct,
        "derived": analysis.derived,
        "timings_ms": analysis.timings_ms,
    }
    notes = [f"quality: {'; '.join(analysis.quality.reasons) or 'accepted'}",
             *(f"review: {r['detail']}" for r in review["reasons"])]
    labels = analysis.frame_labels()
    write_image(out_dir / f"{stem}.mask.png", analysis.frame_mask())
    write_image(out_dir / f"{stem}.overlay.png", render_overlay(frame, labels, analysis.cells, path.name, notes))
    write_image(out_dir / f"{stem}.gallery.png", render_gallery(frame, labels, analysis.cells, path.name))
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def _cell_record(cell) -> dict:
    """One cell of the JSON report: pixels always, micrometres with a calibration."""
    record = {"class": cell.cls, "number": cell.number,
              "centre_px": [round(cell.centre_px[0], 1), round(cell.centre_px[1], 1)],
              "bbox_px": list(cell.bbox_px), "area_px": cell.area_px,
              "equivalent_diameter_px": round(cell.equivalent_diameter_px, 2),
              "confidence": round(cell.confidence, 3), "on_border": cell.on_border}
    if cell.um_per_px is not None:
        record.update(centre_um=[round(v, 2) for v in cell.centre_um], area_um2=round(cell.area_um2, 2),
                      equivalent_diameter_um=round(cell.equivalent_diameter_um, 2))
    return record


def _unique_stem(path: Path, used: set[str]) -> str:
    """Two inputs with the same name (from different folders) must not overwrite each other's outputs."""
    stem, n = path.stem, 2
    while stem in used:
        stem, n = f"{path.stem}-{n}", n + 1
    used.add(stem)
    return stem


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]
