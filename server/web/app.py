"""The web app: inbox, result pages with review and sign-off, patients, devices, upload, reports.

Server-rendered (FastAPI + Jinja2, templates and assets in this package). Every page needs a
signed-in user; every POST needs the session's CSRF token (400 without it) and the role the action
needs (403 otherwise). The access log records method, route pattern (never the concrete path, so no
patient or sample id), status, user name and duration.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from runtime.contracts.errors import ConfigError
from runtime.contracts.sample import field_number
from server.config import ServerConfig
from server.images import KINDS, ImageStore, ImageStoreError, images_for
from server.registry import ANALYTE_NAMES, ANALYTES, Trend, list_patients, patient_history
from server.web import cells as cellmod
from server.web import clinical, plots
from server.web.auth import Accounts, LoginLimiter, Session, tokens_match
from server.web.db import DIAGNOSIS_STATUSES, REVIEW_STATES, Database, InboxFilter, review_reasons
from server.web.uploads import Analyser, UploadLimits, UploadRefused, UploadSettings, check_upload, parse_sample

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "smearscope_session"
PRELOGIN_COOKIE = "smearscope_login_csrf"
access_log = logging.getLogger("smearscope.web.access")
log = logging.getLogger(__name__)
_RESULT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CELL_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CLASSES = ("rbc", "wbc", "platelet")


class BodyTooLarge(Exception):
    """A request body over the web app's limit (refused with 413 while it is still arriving)."""


@dataclass
class WebState:
    config: ServerConfig
    db: Database
    accounts: Accounts
    images: ImageStore
    limiter: LoginLimiter
    analyser: Analyser
    limits: UploadLimits


def create_app(config: ServerConfig, db: Database, model_path: str | None = None) -> FastAPI:
    """The ASGI app over an open database (shared with nothing else in this process)."""
    web = config.web
    images = ImageStore(config.images_path())
    limits = UploadLimits(web.max_upload_files, int(web.max_upload_mb * 1e6), int(web.max_upload_megapixels * 1e6))
    state = WebState(config, db, Accounts(db, web.session_hours), images,
                     LoginLimiter(web.login_attempts, web.login_window_s),
                     Analyser(db, images, UploadSettings(web.upload_site, web.upload_device_id, web.guideline,
                                                         config.max_payload_bytes), model_path), limits)
    secret = web.pseudonym_secret()
    app = FastAPI(title="smearscope", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = state
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(class_names=cellmod.CLASS_NAMES, guideline_names=clinical.GUIDELINE_NAMES)
    templates.env.filters["when"] = _when
    templates.env.filters["field_number"] = field_number
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    body_limit = limits.max_files * limits.max_bytes + 1_000_000

    @app.middleware("http")
    async def access_and_headers(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        route = request.scope.get("route")
        session = request.scope.get("smearscope.session")
        access_log.info("%s %s %d %s %.1fms", request.method, getattr(route, "path", "(unrouted)"),
                        response.status_code, session.user.name if session else "-",
                        1000 * (time.perf_counter() - start))
        return response

    app.add_middleware(BodyLimit, limit=body_limit)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code in (302, 303):
            return RedirectResponse(exc.detail, status_code=303)
        return _error(templates, request, exc.status_code, str(exc.detail))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge):
        return _error(templates, request, 413, "request body is too large")

    def page(request: Request, name: str, session: Session | None, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"session": session, "now": time.time(), **context})

    # -- sign-in ----------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/"):
        token = secrets.token_urlsafe(24)
        response = page(request, "login.html", None, login_csrf=token, next=_safe_next(next), error=None)
        response.set_cookie(PRELOGIN_COOKIE, token, httponly=True, samesite="strict", secure=web.cookie_secure)
        return response

    @app.post("/login")
    async def login(request: Request):
        form = await request.form()
        if not tokens_match(request.cookies.get(PRELOGIN_COOKIE), form.get("csrf")):
            raise HTTPException(400, "the form is missing its security token; reload the sign-in page")
        name, password = str(form.get("username") or "")[:64], str(form.get("password") or "")[:1024]
        client = f"addr:{request.client.host if request.client else '?'}"
        wait = state.limiter.blocked(f"user:{name}", client)
        next_url = _safe_next(str(form.get("next") or "/"))
        if wait:
            response = page(request, "login.html", None, login_csrf=form.get("csrf"), next=next_url,
                            error=f"too many failed sign-ins; try again in {int(wait) + 1} s")
            response.status_code = 429
            return response
        user = state.accounts.authenticate(name, password)
        if user is None:
            state.limiter.failed(f"user:{name}", client)
            response = page(request, "login.html", None, login_csrf=form.get("csrf"), next=next_url,
                            error="wrong user name or password, or the account is disabled")
            response.status_code = 401
            return response
        state.limiter.succeeded(f"user:{name}")
        token, _ = state.accounts.open_session(user)
        response = RedirectResponse(next_url, status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=web.cookie_secure,
                            max_age=int(web.session_hours * 3600))
        response.delete_cookie(PRELOGIN_COOKIE)
        return response

    @app.post("/logout")
    async def logout(request: Request):
        session = await _posting(request, "viewer")
        state.accounts.close_session(session)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    def _session(request: Request) -> Session | None:
        session = state.accounts.session(request.cookies.get(SESSION_COOKIE))
        request.scope["smearscope.session"] = session
        return session

    def _viewing(request: Request) -> Session:
        session = _session(request)
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(303, "/login?" + urlencode({"next": target}))
        return session

    async def _posting(request: Request, role: str, max_files: int = 0) -> Session:
        """Session, then CSRF token, then role: 401, 400, 403 in that order."""
        session = _session(request)
        if session is None:
            raise HTTPException(401, "sign in first")
        try:
            form = await request.form(max_files=max_files, max_fields=200)
        except MultiPartException as exc:
            raise HTTPException(400, f"upload refused: {exc.message}") from None
        if not tokens_match(session.csrf, form.get("csrf")):
            raise HTTPException(400, "the form is missing its security token (CSRF); reload the page and try again")
        if not session.user.can(role):
            raise HTTPException(403, f"this needs the {role} role; you are signed in as {session.user.role}")
        return session

    # -- inbox ------------------------------------------------------------------------------------
    def _filters(request: Request) -> InboxFilter:
        q = request.query_params
        status, review = q.get("status", ""), q.get("review", "")
        return InboxFilter(
            site=q.get("site", "")[:64], device=q.get("device", "")[:64],
            date_from=q.get("from", "") if _DATE.match(q.get("from", "")) else "",
            date_to=q.get("to", "") if _DATE.match(q.get("to", "")) else "",
            status=status if status in (*DIAGNOSIS_STATUSES, "none") else "",
            review=review if review in REVIEW_STATES else "",
            needs_review=q.get("needs_review") == "1", patient=q.get("patient", "")[:128])

    @app.get("/", response_class=HTMLResponse)
    async def inbox(request: Request):
        session = _viewing(request)
        filters = _filters(request)
        try:
            number = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            number = 1
        result_page = db.inbox(filters, number)
        qs = filters.query_string()
        return page(request, "inbox.html", session, inbox=result_page, filters=filters, facets=db.facets(),
                    statuses=DIAGNOSIS_STATUSES, review_states=REVIEW_STATES,
                    page_url=lambda n: "/?" + urlencode({**qs, "page": n}),
                    export_url="/export.csv" + ("?" + urlencode(qs) if qs else ""))

    @app.get("/export.csv")
    async def export(request: Request):
        _viewing(request)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["result_id", "created_at", "site", "device_id", "sample_id", "patient_id", "rbc", "wbc",
                         "platelet", "diagnosis", "review_state", "needs_review"])
        for r in db.export_rows(_filters(request)):
            writer.writerow([r.result_id, r.created_at, r.site, r.device_id, _cell(r.sample_id), _cell(r.patient_id),
                             r.rbc, r.wbc, r.platelet, r.diag_status or "", r.review_state, int(r.needs_review)])
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="smearscope-results.csv"'})

    # -- one result -------------------------------------------------------------------------------
    def _result(result_id: str) -> dict[str, Any]:
        result = db.result(result_id) if _RESULT_ID.match(result_id) else None
        if result is None:
            raise HTTPException(404, "no such result")
        return result

    def _result_context(result_id: str) -> dict[str, Any]:
        result = _result(result_id)
        reviews = db.reviews(result_id)
        stored = images_for(db.store, result_id)
        cells = _cells(result, stored)
        overrides = clinical.cell_classes(reviews)
        gallery: dict[str, list[Any]] = {c: [] for c in cellmod.CLASS_ORDER}
        for cell in cells or []:
            gallery[overrides.get(cell.cell_id, cell.cls)].append(cell)
        needed, reasons = review_reasons(result)
        verifier = next((r for r in reversed(reviews) if r["action"] in ("verify", "amend")), None)
        source = "result" if cellmod.cells_from_result(result) is not None else ("mask" if cells is not None else None)
        return {"r": result, "reviews": reviews, "images": {k: stored.get(k) for k in KINDS}, "cells": cells,
                "cells_source": source,
                "gallery": gallery, "overrides": overrides, "needs_review": needed, "review_reasons": reasons,
                "review_state": db.review_state(result_id), "signed": verifier,
                "amended_counts": clinical.amended_counts(result, reviews),
                "verdicts": clinical.guideline_verdicts(result), "network": clinical.network_inputs(result)}

    def _cells(result: dict[str, Any], stored: dict[str, Any]) -> list[cellmod.Cell] | None:
        own = cellmod.cells_from_result(result)
        if own is not None:
            return own
        if "mask" in stored:
            data = images.get(stored["mask"].sha256)
            return list(cellmod.cells_from_mask(data)) if data else None
        return None

    @app.get("/results/{result_id}", response_class=HTMLResponse)
    async def result_page(request: Request, result_id: str):
        session = _viewing(request)
        return page(request, "result.html", session, **_result_context(result_id), classes=CLASSES)

    @app.get("/results/{result_id}/report", response_class=HTMLResponse)
    async def report(request: Request, result_id: str):
        session = _viewing(request)
        return page(request, "report.html", session, **_result_context(result_id), classes=CLASSES)

    @app.get("/results/{result_id}/images/{kind}")
    async def result_image(request: Request, result_id: str, kind: str):
        _viewing(request)
        _result(result_id)
        image = images_for(db.store, result_id).get(kind) if kind in KINDS else None
        data = _image_bytes(image.sha256) if image else None
        if data is None:
            raise HTTPException(404, f"no {kind} image stored for this result (pending)")
        return Response(data, media_type=image.content_type, headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/results/{result_id}/cells/{cell_id}.png")
    async def cell_crop(request: Request, result_id: str, cell_id: str):
        import cv2

        _viewing(request)
        result = _result(result_id)
        stored = images_for(db.store, result_id)
        cells = _cells(result, stored) or []
        cell = next((c for c in cells if c.cell_id == cell_id), None) if _CELL_ID.match(cell_id) else None
        if cell is None or "field" not in stored:
            raise HTTPException(404, "no such cell, or the field image is still pending")
        ok, png = cv2.imencode(".png", cellmod.crop(decoded_field(stored["field"].sha256), cell.bbox))
        return Response(png.tobytes(), media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    @lru_cache(maxsize=2)
    def decoded_field(sha256: str) -> Any:
        """A field image decoded once for all of its gallery's crops (a missing one raises: not cached)."""
        from runtime.contracts.errors import ImageError
        from runtime.contracts.imageio import decode_image

        data = _image_bytes(sha256)
        if data is None:
            raise HTTPException(404, "the field image is still pending")
        try:
            return decode_image(data, f"field image {sha256[:12]}")[1]
        except ImageError as exc:
            raise HTTPException(404, str(exc)) from None

    def _image_bytes(sha256: str) -> bytes | None:
        try:
            return images.get(sha256)
        except ImageStoreError as exc:
            log.error("image store: %s", exc)
            return None

    @app.post("/results/{result_id}/review")
    async def review(request: Request, result_id: str):
        session = await _posting(request, "reviewer")
        result = _result(result_id)
        form = await request.form()
        action = str(form.get("action") or "")
        comment = str(form.get("comment") or "").strip()[:2000]
        if action not in ("verify", "amend", "comment"):
            raise HTTPException(400, "unknown review action")
        changes: dict[str, Any] = {}
        if action == "amend":
            changes = _amendment(result, form)
            if not changes and not comment:
                raise HTTPException(400, "an amendment needs a changed count, a reclassified cell or a comment")
        if action == "comment" and not comment:
            raise HTTPException(400, "the comment is empty")
        db.add_review(result_id, session.user.name, action, changes, comment)
        return RedirectResponse(f"/results/{result_id}#review", status_code=303)

    def _amendment(result: dict[str, Any], form: Any) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        counts = {}
        for cls in CLASSES:
            text = str(form.get(f"count_{cls}") or "").strip()
            if not text:
                continue
            if not text.isdigit() or int(text) > 1_000_000:
                raise HTTPException(400, f"corrected {cls} count must be a whole number >= 0")
            if int(text) != (result.get("counts") or {}).get(cls):
                counts[cls] = int(text)
        if counts:
            changes["counts"] = counts
        moves = []
        stored = images_for(db.store, result["result_id"])
        known = {c.cell_id: c.cls for c in (_cells(result, stored) or [])}
        for key in form.keys():
            if not key.startswith("cell_"):
                continue
            cell_id, target = key[5:], str(form.get(key) or "")
            if not target:
                continue
            if cell_id not in known or target not in CLASSES:
                raise HTTPException(400, f"cannot reclassify cell {cell_id[:64]!r} as {target[:16]!r}")
            if target != known[cell_id]:
                moves.append({"cell": cell_id, "from": known[cell_id], "to": target})
        if moves:
            changes["reclassify"] = moves
        return changes

    # -- patients ---------------------------------------------------------------------------------
    @app.get("/patients", response_class=HTMLResponse)
    async def patients(request: Request):
        session = _viewing(request)
        return page(request, "patients.html", session, patients=db_call(list_patients))

    def db_call(fn, *args):
        with db.lock:
            return fn(db.store, *args)

    @app.get("/patients/{patient_id}", response_class=HTMLResponse)
    async def patient(request: Request, patient_id: str):
        session = _viewing(request)
        history = db_call(patient_history, patient_id) if len(patient_id) <= 128 else None
        if history is None:
            raise HTTPException(404, "no such patient")
        svgs = [(ANALYTE_NAMES[a], plots.render(_analyte_plot(a, history.visits, history.trends[a])), history.trends[a])
                for a in ANALYTES]
        count_plots = []
        for cls, label in (("wbc", "White cells per field"), ("platelet", "Platelets per field"),
                           ("rbc", "Red cells per field")):
            points = [(v.when, v.mean_counts()[cls]) for v in history.visits if cls in v.mean_counts()]
            count_plots.append(plots.render(plots.Plot(label, "cells/field", [plots.Series(label, points)])))
        return page(request, "patient.html", session, history=history, plots=svgs, count_plots=count_plots,
                    names=ANALYTE_NAMES)

    # -- devices ----------------------------------------------------------------------------------
    @app.get("/devices", response_class=HTMLResponse)
    async def devices(request: Request):
        session = _viewing(request)
        return page(request, "devices.html", session, devices=db.devices())

    # -- upload -----------------------------------------------------------------------------------
    @app.get("/upload", response_class=HTMLResponse)
    async def upload_form(request: Request):
        session = _viewing(request)
        if not session.user.can("reviewer"):
            raise HTTPException(403, "uploading needs the reviewer role")
        return page(request, "upload.html", session, error=None, limits=limits, form={}, hashing=secret is not None)

    @app.post("/upload")
    async def upload(request: Request):
        session = await _posting(request, "reviewer", max_files=limits.max_files)
        form = await request.form()
        files = [f for f in form.getlist("images") if hasattr(f, "read")]
        fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        try:
            if not files or all(not (f.filename or "") for f in files):
                raise UploadRefused("choose at least one smear image")
            if len(files) > limits.max_files:
                raise UploadRefused(f"{len(files)} files at once; at most {limits.max_files}")
            checked = []
            for f in files:
                data = await f.read(limits.max_bytes + 1)
                checked.append(check_upload(f.filename, f.content_type, data, limits))
            sample = parse_sample(fields, secret)
        except UploadRefused as exc:
            response = page(request, "upload.html", session, error=str(exc), limits=limits, form=fields,
                            hashing=secret is not None)
            response.status_code = 400
            return response
        job = state.analyser.submit(session.user.name, sample, checked)
        return RedirectResponse(f"/uploads/{job.job_id}", status_code=303)

    def _job(job_id: str, session: Session):
        job = state.analyser.jobs.get(job_id)
        if job is None or (job.user != session.user.name and not session.user.can("admin")):
            raise HTTPException(404, "no such upload")
        return job

    @app.get("/uploads/{job_id}", response_class=HTMLResponse)
    async def upload_progress(request: Request, job_id: str):
        session = _viewing(request)
        return page(request, "progress.html", session, job=_job(job_id, session))

    @app.get("/uploads/{job_id}/status")
    async def upload_status(request: Request, job_id: str):
        session = _viewing(request)
        return JSONResponse(_job(job_id, session).to_dict())

    # -- users (admin) ----------------------------------------------------------------------------
    @app.get("/admin/users", response_class=HTMLResponse)
    async def users_page(request: Request):
        session = _viewing(request)
        if not session.user.can("admin"):
            raise HTTPException(403, "the user list needs the admin role")
        return page(request, "users.html", session, users=state.accounts.list())

    @app.post("/admin/users/{name}/disable")
    async def disable_user(request: Request, name: str):
        session = await _posting(request, "admin")
        if name == session.user.name:
            raise HTTPException(400, "you cannot disable your own account")
        try:
            state.accounts.disable(name)
        except ConfigError:
            raise HTTPException(404, "no such user") from None
        return RedirectResponse("/admin/users", status_code=303)

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    return app


def _analyte_plot(analyte: str, visits: list[Any], trend: Trend) -> plots.Plot:
    from runtime.diagnosis.tables import cutpoints_for

    test = {"fpg": "fpg", "hba1c": "hba1c", "ogtt": "ogtt_2h"}[analyte]
    unit = ANALYTES[analyte][0]
    thresholds: dict[float, list[str]] = {}
    for guideline in clinical.GUIDELINES:
        for cut in cutpoints_for(guideline, False):
            if cut.test == test:
                value = cut.thresholds["%" if analyte == "hba1c" else "mmol/L"]
                thresholds.setdefault(value, []).append(f"{clinical.GUIDELINE_NAMES[guideline]} {cut.status}")
    labels = [(v, "; ".join(sorted(set(n)))) for v, n in sorted(thresholds.items())]
    points = [(v.when, v.labs[analyte]) for v in visits if analyte in v.labs]
    return plots.Plot(ANALYTE_NAMES[analyte], unit, [plots.Series(ANALYTE_NAMES[analyte], points)], labels, trend)


def _error(templates: Jinja2Templates, request: Request, status: int, message: str) -> HTMLResponse:
    response = templates.TemplateResponse(request, "error.html", {"session": None, "status": status,
                                                                  "message": message, "now": time.time()})
    response.status_code = status
    return response


class BodyLimit:
    """Refuses a request body over `limit` bytes: at once from its Content-Length, or while it arrives
    (a chunked body has none), before the form parser spools it anywhere."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            body = b"request body is too large"
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)


def _safe_next(target: str) -> str:
    """Only a path on this site (no scheme, no host, no //) may follow the sign-in."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _cell(text: str | None) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = text or ""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _when(value: Any) -> str:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d")
    text = str(value or "")
    return text.replace("T", " ").replace("Z", " UTC")[:23] if text else "-"
