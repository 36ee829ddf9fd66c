"""Smear images uploaded through the web app: checked before anything is decoded or stored, then
analysed in the background with the device's own runtime and stored like a device's results.

Checks, in order, each with a one-line reason: file name (no path parts), size, declared content
type, the bytes' real format (JPEG or PNG), then the device's own decoder
(runtime.contracts.imageio.decode_image: the pixel count read from the header, so a decompression
bomb is refused before decoding, completeness, a real decode). A batch with any bad file is refused whole: nothing is stored.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from runtime.contracts.errors import SmearscopeError
from server.images import ImageStore, ResultImage, attach
from server.web.db import Database

log = logging.getLogger(__name__)

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
_LAB_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_JOBS_KEPT = 500  # finished upload jobs whose progress page still answers


class UploadRefused(ValueError):
    """One reason, for a person, why an upload was not accepted."""


@dataclass(frozen=True)
class UploadLimits:
    max_files: int
    max_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class CheckedImage:
    name: str
    data: bytes
    kind: str  # jpeg | png
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.kind]


def check_upload(name: str | None, content_type: str | None, data: bytes, limits: UploadLimits) -> CheckedImage:
    """Everything that can be said about one file without decoding it, then a decode."""
    from runtime.contracts.errors import ImageError
    from runtime.contracts.imageio import decode_image, image_header_size

    name = name or ""
    shown = name if len(name) <= 80 else name[:77] + "..."
    if not name or "/" in name or "\\" in name or name in (".", "..") or any(ord(c) < 32 for c in name):
        raise UploadRefused(f"file name {shown!r}: give the file itself, without folder parts")
    if len(data) == 0:
        raise UploadRefused(f"{shown}: file is empty")
    if len(data) > limits.max_bytes:
        raise UploadRefused(f"{shown}: {len(data) / 1e6:.1f} MB is over the limit of {limits.max_bytes / 1e6:.0f} MB")
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in CONTENT_TYPES.values():
        raise UploadRefused(f"{shown}: content type {declared or 'none'!r} is not an image type this server takes"
                            " (image/jpeg or image/png)")
    fmt, _ = image_header_size(data)
    kind = {"JPEG": "jpeg", "PNG": "png"}.get(fmt or "")
    if kind is None:
        raise UploadRefused(f"{shown}: not a JPEG or PNG image")
    if CONTENT_TYPES[kind] != declared:
        raise UploadRefused(f"{shown}: declared {declared} but the file is a {kind.upper()}")
    try:
        _, frame = decode_image(data, shown, limits.max_pixels)
    except ImageError as exc:
        raise UploadRefused(str(exc)) from None
    height, width = frame.shape[:2]
    return CheckedImage(name, data, kind, width, height)


def parse_sample(form: dict[str, str], secret: bytes | None = None) -> tuple[str, str | None, dict[str, Any]]:
    """(sample_id, patient_id, labs) from the upload form; raises UploadRefused with the field's name.

    With the site secret, the typed patient reference is replaced by its keyed hash, the same id a
    device with that secret makes (runtime.contracts.sample.pseudonymize); the reference is never stored."""
    from runtime.contracts.sample import parse_lab_value, pseudonymize

    sample_id = (form.get("sample_id") or "").strip() or f"web-{uuid.uuid4().hex[:12]}"
    if not _ID.match(sample_id):
        raise UploadRefused("sample id: 1-128 characters of A-Z a-z 0-9 _ . : -")
    patient_id = (form.get("patient_id") or "").strip() or None
    if patient_id is not None and secret is not None:
        if len(patient_id) > 128 or any(ord(c) < 32 for c in patient_id):
            raise UploadRefused("patient reference: at most 128 printable characters")
        patient_id = pseudonymize(patient_id, secret)
    elif patient_id is not None and not _ID.match(patient_id):
        raise UploadRefused("patient id: a pseudonymous id of 1-128 characters of A-Z a-z 0-9 _ . : - (never a name)")
    labs: dict[str, Any] = {}
    for key in ("fpg_mmol_l", "hba1c_pct", "ogtt_2h_mmol_l", "age", "bmi"):
        text = (form.get(key) or "").strip()
        if text:
            labs[key] = _number(key, text)
    if (form.get("sex") or "").strip() in ("F", "M"):
        labs["sex"] = form["sex"].strip()
    if (form.get("pregnant") or "") == "1":
        labs["pregnant"] = True
    for line in (form.get("other_labs") or "").splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _LAB_KEY.match(key) or not value.strip():
            raise UploadRefused(f"other lab values: {line.strip()[:60]!r} is not NAME=VALUE (e.g. hdl_mmol_l=1.2)")
        value_parsed = parse_lab_value(value)
        if isinstance(value_parsed, float) and not math.isfinite(value_parsed):
            raise UploadRefused(f"other lab values: {key} is not a finite number")
        labs[key] = value_parsed
    return sample_id, patient_id, labs


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UploadRefused(f"{key}: {text[:30]!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise UploadRefused(f"{key}: must be a finite, non-negative number")
    return value


@dataclass
class UploadJob:
    """One batch being analysed; the page polls it for progress."""

    job_id: str
    user: str
    sample_id: str
    total: int
    done: int = 0
    current: str = ""
    state: str = "queued"  # queued | running | done | failed
    result_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "state": self.state, "done": self.done, "total": self.total,
                "current": self.current, "result_ids": list(self.result_ids), "errors": list(self.errors)}


@dataclass(frozen=True)
class UploadSettings:
    site: str
    device_id: str
    guideline: str
    max_payload_bytes: int


class Analyser:
    """The device's runtime at the server: the shipped int8 segmentation model on ONNX Runtime, the
    guideline diagnosis, result/1 built and validated exactly as a device does, stored through the
    subscriber's own checks, its images in the image store. One batch at a time."""

    def __init__(self, db: Database, images: ImageStore, settings: UploadSettings, model_path: str | None = None) -> None:
        self.db, self.images, self.settings = db, images, settings
        self.model_path = model_path
        self.jobs: dict[str, UploadJob] = {}
        self._analyzer = None
        self._run_lock = threading.Lock()

    def _get_analyzer(self):
        from runtime.analysis.analyzer import Analyzer
        from runtime.contracts.config import DiagnosisConfig
        from runtime.diagnosis.decision import GuidelineDiagnoser

        if self._analyzer is None:
            diagnoser = GuidelineDiagnoser.from_config(DiagnosisConfig(guideline=self.settings.guideline))
            self._analyzer = Analyzer.from_model_file(self.model_path, diagnoser=diagnoser)
        return self._analyzer

    def submit(self, user: str, sample: tuple[str, str | None, dict[str, Any]], files: list[CheckedImage]) -> UploadJob:
        job = UploadJob(uuid.uuid4().hex, user, sample[0], len(files))
        finished = [k for k, j in self.jobs.items() if j.state in ("done", "failed")]
        for key in finished[:max(0, len(self.jobs) - MAX_JOBS_KEPT)]:  # oldest finished first (dicts keep order)
            del self.jobs[key]
        self.jobs[job.job_id] = job
        thread = threading.Thread(target=self._run, args=(job, sample, files), name=f"upload-{job.job_id[:8]}",
                                  daemon=True)
        thread.start()
        return job

    def _run(self, job: UploadJob, sample: tuple[str, str | None, dict[str, Any]], files: list[CheckedImage]) -> None:
        with self._run_lock:
            job.state = "running"
            try:
                self._analyse_all(job, sample, files)
                job.state = "done" if not job.errors else "failed"
            except Exception as exc:  # the server must stay up; the person sees what went wrong
                log.exception("upload %s failed", job.job_id)
                job.errors.append(f"analysis failed: {type(exc).__name__}: {exc}")
                job.state = "failed"
            job.current = ""

    def _analyse_all(self, job: UploadJob, sample: tuple[str, str | None, dict[str, Any]],
                     files: list[CheckedImage]) -> None:
        from runtime.contracts.imageio import decode_image
        from runtime.delivery.topics import topic
        from runtime.analysis.overlay import draw_overlay
        from runtime.analysis.result import build_result
        from runtime.contracts.sample import SampleContext, SampleField, SampleSummary
        from server.validation import Accepted, check_message

        analyzer = self._get_analyzer()
        sample_id, patient_id, labs = sample
        context = SampleContext(sample_id, patient_id, labs, len(files))
        summary = SampleSummary(sample_id)
        results_topic = topic(self.settings.site, self.settings.device_id, "results")
        for index, image in enumerate(files):
            job.current = image.name
            frame = decode_image(image.data, image.name)[1]  # checked at upload: decodes as then
            try:
                analysis = analyzer.analyze(frame, sample=SampleField(context, index), history=summary,
                                            source=image.name)
            except SmearscopeError as exc:
                job.errors.append(f"{image.name}: {exc}")
                job.done += 1
                continue
            with self.db.lock:
                seq = self._next_seq()
                result = build_result(analysis, device_id=self.settings.device_id, seq=seq,
                                      sample=SampleField(context, index), model=analyzer.model.info())
                checked = check_message(results_topic, json.dumps(result).encode("utf-8"),
                                        self.settings.max_payload_bytes)
                if not isinstance(checked, Accepted):
                    job.errors.append(f"{image.name}: result refused by the store: {checked.reason} ({checked.detail})")
                    job.done += 1
                    continue
                self.db.store.record(checked)
            self._store_images(result["result_id"], image, frame, analysis, draw_overlay)
            job.result_ids.append(result["result_id"])
            job.done += 1

    def _store_images(self, result_id: str, image: CheckedImage, frame: Any, analysis: Any, draw_overlay: Any) -> None:
        import cv2

        from runtime.contracts.imageio import check_frame

        frame = check_frame(frame)
        frame_mask = analysis.frame_mask()
        ok_o, overlay = cv2.imencode(".png", draw_overlay(frame, frame_mask, analysis.counts))
        ok_m, mask = cv2.imencode(".png", frame_mask)
        if not (ok_o and ok_m):
            raise SmearscopeError("could not encode the overlay or mask as PNG")
        for kind, data, ctype in (("field", image.data, image.content_type), ("overlay", overlay.tobytes(), "image/png"),
                                  ("mask", mask.tobytes(), "image/png")):
            sha = self.images.put(data)
            with self.db.lock:
                attach(self.db.store, ResultImage(result_id, kind, sha, ctype))

    def _next_seq(self) -> int:
        rows = self.db.store.query("SELECT MAX(seq) FROM results WHERE device_id = ?", (self.settings.device_id,))
        return 0 if rows[0][0] is None else int(rows[0][0]) + 1
