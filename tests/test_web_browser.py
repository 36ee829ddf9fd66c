"""The web app in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a
real uvicorn server on a free loopback port: sign in, upload a real smear with lab values, see the
result with overlay and gallery, sign it off, see the patient's trend. Screenshots of every page go to
out/screenshots/ (or $SMEARSCOPE_SCREENSHOTS)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mqtt_helpers import free_port
from web_fixtures import PASSWORD, result_with_diagnosis

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture()
def live_server(tmp_path):
    from server.config import ServerConfig
    from server.web.auth import Accounts
    from server.web.runner import WebServer

    config = ServerConfig.from_dict({"database": f"sqlite:///{tmp_path / 'server.sqlite3'}",
                                     "web": {"images_dir": str(tmp_path / "images"), "port": free_port()}},
                                    base_dir=tmp_path)
    server = WebServer(config, watch_status=False)
    Accounts(server.db).add("dr.ana", PASSWORD, "reviewer")
    server.start()
    yield server
    server.stop()


def test_sign_in_upload_review_sign_off_and_trend_in_chromium(live_server, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    from runtime.capture.bundled import bundled_frames

    frames = [frame.image_path for frame in bundled_frames()]  # real smears that ship with the package
    shots = Path(os.environ.get("SMEARSCOPE_SCREENSHOTS", REPO / "out" / "screenshots"))
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    # Three earlier visits of the same patient, as a device would have sent them, so the trend has 4 points.
    from server.validation import Accepted, check_message
    import json

    for i, (day, fpg, a1c) in enumerate([("2024-06-15", 5.5, 5.5), ("2025-01-15", 5.8, 5.7),
                                              ("2025-07-15", 6.1, 5.9)]):
        result = result_with_diagnosis(i, patient_id="p-browser", sample_id=f"S-old-{i}",
                                       labs={"fpg_mmol_l": fpg, "hba1c_pct": a1c}, created_at=f"{day}T09:00:00Z")
        checked = check_message("smearscope/v1/lab1/dev-a/results", json.dumps(result).encode(), 262144)
        assert isinstance(checked, Accepted)
        live_server.db.store.record(checked)

    base = live_server.url
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(base + "/")
        assert "/login" in page.url
        page.screenshot(path=str(shots / "01-login.png"), full_page=True)
        page.fill("input[name=username]", "dr.ana")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        page.screenshot(path=str(shots / "02-inbox.png"), full_page=True)

        page.goto(base + "/upload")
        page.set_input_files("input[name=images]", str(frames[0]))
        page.fill("input[name=sample_id]", "S-browser-1")
        page.fill("input[name=patient_id]", "p-browser")
        page.fill("input[name=fpg_mmol_l]", "6.6")
        page.fill("input[name=hba1c_pct]", "6.2")
        page.screenshot(path=str(shots / "03-upload.png"), full_page=True)
        page.click("#upload-form button[type=submit]")
        page.wait_for_url("**/uploads/**", timeout=30_000)
        page.screenshot(path=str(shots / "04-progress.png"), full_page=True)
        page.wait_for_url("**/results/**", timeout=120_000)  # the progress script opens the single result
        page.wait_for_selector("#gallery figure.cell img")
        page.wait_for_function("document.querySelector('.overlay-img').complete"
                               " && document.querySelector('.overlay-img').naturalWidth > 0")
        assert page.is_visible(".overlay-img")
        assert "prediabetes" in page.inner_text("#diagnosis")
        page.screenshot(path=str(shots / "05-result-overlay.png"), full_page=True)
        page.click("label[for=overlay-toggle]")
        assert not page.is_visible(".overlay-img")  # the toggle hides the outlines
        page.screenshot(path=str(shots / "06-result-plain.png"))
        page.locator("#gallery").screenshot(path=str(shots / "07-gallery.png"))

        page.fill("textarea[name=comment]", "counts checked against the field")
        page.click("button[value=verify]")
        page.wait_for_selector("#review .b-verified, .facts .b-verified")
        assert "verified" in page.inner_text(".facts")
        assert "counts checked against the field" in page.inner_text("#review")
        page.screenshot(path=str(shots / "08-verified.png"), full_page=True)
        result_url = page.url.split("#")[0]
        page.goto(result_url + "/report")
        assert "Verified by dr.ana" in page.inner_text(".signoff")
        page.emulate_media(media="print")
        page.screenshot(path=str(shots / "09-report-print.png"), full_page=True)
        page.emulate_media(media="screen")

        page.goto(base + "/patients/p-browser")
        assert page.locator("svg.plot").count() == 6
        assert page.locator("svg.plot .crossing").count() >= 1, page.inner_text("#trends")
        assert "4 visits" in page.inner_text("#trends")
        page.screenshot(path=str(shots / "10-patient-trend.png"), full_page=True)
        page.goto(base + "/devices")
        assert "web-upload" in page.inner_text("main")
        page.screenshot(path=str(shots / "11-devices.png"), full_page=True)
        page.goto(base + "/?review=verified")
        assert "S-browser-1" in page.inner_text("table.list")
        page.screenshot(path=str(shots / "12-inbox-verified.png"), full_page=True)
        browser.close()
    assert len(list(shots.glob("*.png"))) == 12
