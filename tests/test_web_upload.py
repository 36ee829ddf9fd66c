"""Uploads: a real smear analysed by the runtime and stored like a device's result; bad files refused."""

from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from web_fixtures import client_for, csrf_of, make_env

def _real_smear() -> bytes:
    """A real smear frame that ships with the package (runtime/capture/frames)."""
    from runtime.capture.bundled import bundled_frames

    return bundled_frames()[0].image_path.read_bytes()


def _png(width: int, height: int, body: bytes | None = None) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body or zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


@pytest.fixture()
def env(tmp_path):
    env = make_env(tmp_path, max_upload_files=3, max_upload_mb=1.0, max_upload_megapixels=4.0)
    yield env
    env.db.close()


def _post(client, files, **fields):
    token = csrf_of(client.get("/upload").text)
    return client.post("/upload", data={"csrf": token, **fields}, files=[("images", f) for f in files],
                       follow_redirects=False)


def _wait(client, location: str) -> dict:
    for _ in range(240):
        status = client.get(location + "/status").json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.25)
    raise AssertionError("upload did not finish")


def test_real_smear_is_analysed_and_stored_like_a_device_result(env):
    data = _real_smear()
    client = client_for(env, "reviewer")
    response = _post(client, [("field1.jpg", data, "image/jpeg"), ("field2.jpg", data, "image/jpeg")],
                     sample_id="S-up", patient_id="p-up", fpg_mmol_l="6.4", hba1c_pct="6.1")
    assert response.status_code == 303, response.text
    progress = client.get(response.headers["location"]).text
    assert "<progress" in progress
    status = _wait(client, response.headers["location"])
    assert status["state"] == "done" and status["done"] == 2 and not status["errors"], status
    rows = env.db.query("SELECT device_id, site, seq, sample_id, patient_id, payload FROM results ORDER BY seq")
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [("web-upload", "web", 0, "S-up", "p-up"),
                                                             ("web-upload", "web", 1, "S-up", "p-up")]
    import json

    result = json.loads(rows[0][5])
    assert result["schema"] == "result/2" and result["model"]["name"] and result["counts"]["rbc"] > 5
    assert result["diagnosis"]["status"] == "prediabetes"  # WHO IFG from FPG 6.4
    page = client.get(f"/results/{status['result_ids'][0]}").text
    assert "overlay-toggle" in page and "/cells/" in page and "pending" not in page.split('id="field"')[1][:400]
    assert client.get(f"/results/{status['result_ids'][0]}/images/field").content == data
    import re

    cell_id = re.search(r'/cells/([A-Za-z0-9_.-]+)\.png', page).group(1)
    crop = client.get(f"/results/{status['result_ids'][0]}/cells/{cell_id}.png")
    assert crop.status_code == 200 and cv2.imdecode(np.frombuffer(crop.content, np.uint8), cv2.IMREAD_COLOR).shape[2] == 3
    assert client.get(f"/results/{status['result_ids'][0]}/cells/nope.png").status_code == 404
    assert client.get(f"/results/{status['result_ids'][0]}/images/thumbnail").status_code == 404
    overlay = client.get(f"/results/{status['result_ids'][0]}/images/overlay")
    assert overlay.headers["content-type"] == "image/png"
    assert cv2.imdecode(np.frombuffer(overlay.content, np.uint8), cv2.IMREAD_COLOR).shape[:2] == \
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    # The same frame twice: identical field, overlay and mask bytes, each kept once, linked from both results.
    assert len([p for p in (env.tmp / "images").rglob("*") if p.is_file()]) == 3
    assert env.db.query("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM result_images")[0] == (6, 3)


def _refused(env, client, files, message, **fields):
    response = _post(client, files, **fields)
    assert response.status_code in (400, 413), response.status_code
    assert message in response.text, response.text[-600:]
    assert env.db.query("SELECT COUNT(*) FROM results")[0][0] == 0
    assert not [p for p in (env.tmp / "images").rglob("*") if p.is_file()]
    assert client.get("/healthz").status_code == 200


def test_bad_uploads_are_refused_and_nothing_is_stored(env):
    client = client_for(env, "reviewer")
    ok, jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 200, np.uint8))
    jpeg = jpeg.tobytes()
    _refused(env, client, [("notes.jpg", b"hello, not an image", "image/jpeg")], "not a JPEG or PNG")
    _refused(env, client, [("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")], "truncated")
    _refused(env, client, [("a.jpg", jpeg, "text/plain")], "content type")
    _refused(env, client, [("a.png", jpeg, "image/png")], "declared image/png but the file is a JPEG")
    _refused(env, client, [("../../etc/a.jpg", jpeg, "image/jpeg")], "without folder parts")
    _refused(env, client, [("dir\\a.jpg", jpeg, "image/jpeg")], "without folder parts")
    _refused(env, client, [("bomb.png", _png(50_000, 50_000), "image/png")], "refused before decoding")
    _refused(env, client, [("big.jpg", jpeg + b"\0" * 1_100_000, "image/jpeg")], "over the limit of 1 MB")
    _refused(env, client, [(f"{i}.jpg", jpeg, "image/jpeg") for i in range(4)], "Too many files")
    _refused(env, client, [("grey.png", cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes(), "image/png")],
             "1 channel")
    _refused(env, client, [("a.jpg", jpeg, "image/jpeg")], "fpg_mmol_l", fpg_mmol_l="six")
    _refused(env, client, [("a.jpg", jpeg, "image/jpeg"), ("b.jpg", b"junk", "image/jpeg")], "not a JPEG or PNG")


def test_a_body_over_the_limit_is_refused_before_parsing(env):
    client = client_for(env, "reviewer")
    token = csrf_of(client.get("/upload").text)
    response = client.post("/upload", data={"csrf": token}, files=[("images", ("x.jpg", b"\xff" * 4_200_000, "image/jpeg"))])
    assert response.status_code == 413
    assert client.get("/healthz").status_code == 200


def test_patient_reference_is_hashed_with_the_site_secret(tmp_path, monkeypatch):
    from runtime.contracts.sample import pseudonymize

    data = _real_smear()
    monkeypatch.setenv("SMEARSCOPE_TEST_SITE_SECRET", "s3cret-site-key")
    env = make_env(tmp_path, pseudonym_secret_env="SMEARSCOPE_TEST_SITE_SECRET")
    try:
        client = client_for(env, "reviewer")
        assert "keyed hash" in client.get("/upload").text
        response = _post(client, [("f.jpg", data, "image/jpeg")], patient_id="MRN 12345", fpg_mmol_l="5.0")
        assert _wait(client, response.headers["location"])["state"] == "done"
        stored = env.db.query("SELECT patient_id, payload FROM results")[0]
        assert stored[0] == pseudonymize("MRN 12345", b"s3cret-site-key")
        assert "MRN" not in stored[1]
    finally:
        env.db.close()


def test_a_named_but_unset_secret_is_a_config_error(tmp_path, monkeypatch):
    from runtime.contracts.errors import ConfigError

    monkeypatch.delenv("SMEARSCOPE_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError, match="web.pseudonym_secret_env"):
        make_env(tmp_path, pseudonym_secret_env="SMEARSCOPE_TEST_UNSET")
