"""Every page of the web app through the framework's test client, per role."""

from __future__ import annotations

import json

import pytest

from web_fixtures import client_for, csrf_of, result_with_diagnosis, web_env  # noqa: F401

PAGES = ["/", "/patients", "/devices", "/export.csv"]


@pytest.mark.parametrize("role", ["viewer", "reviewer", "admin"])
def test_every_page_renders_for_every_role(web_env, role):
    rid = web_env.store_result(result_with_diagnosis(1, patient_id="p-a"))
    client = client_for(web_env, role)
    for url in [*PAGES, f"/results/{rid}", f"/results/{rid}/report", "/patients/p-a"]:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    upload = client.get("/upload")
    assert upload.status_code == (403 if role == "viewer" else 200)
    assert ("/upload" in client.get("/").text) == (role != "viewer")


def test_signed_out_pages_redirect_to_sign_in(web_env):
    client = client_for(web_env, None)
    for url in [*PAGES, "/upload", "/patients/p-a"]:
        response = client.get(url, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), url


def test_unknown_ids_are_404(web_env):
    client = client_for(web_env, "viewer")
    for url in ["/results/01a23501-c60a-71d4-b207-b286a938bc73", "/results/not-an-id", "/patients/p-nobody",
                "/results/01a23501-c60a-71d4-b207-b286a938bc73/report", "/uploads/0123", "/nope"]:
        assert client.get(url).status_code == 404, url


def test_inbox_newest_first_filters_and_paging(web_env):
    ids = [web_env.store_result(result_with_diagnosis(i, created_at=f"2026-03-{1 + i % 28:02d}T10:{i % 60:02d}:00Z"))
           for i in range(60)]
    web_env.store_result(result_with_diagnosis(99, labs={"fpg_mmol_l": 8.0}, created_at="2026-04-02T09:00:00Z"),
                         site="lab2")
    client = client_for(web_env, "viewer")
    first = client.get("/").text
    assert "61 results" in first and "page 1 of 2" in first
    assert first.index("2026-04-02") < first.index("2026-03-28")  # newest first
    assert "page 2 of 2" in client.get("/?page=2").text
    lab2 = client.get("/?site=lab2").text
    assert "1 result<" in lab2 and "diabetes" in lab2
    march = client.get("/?from=2026-03-01&to=2026-03-01").text
    assert "3 results" in march  # i = 0, 28, 56
    assert "1 result<" in client.get("/?status=diabetes").text
    assert "0 results" in client.get("/?review=verified").text
    assert len(ids) == 60


def test_needs_review_filter_and_reasons(web_env):
    ok = result_with_diagnosis(1)
    bad = result_with_diagnosis(2)
    bad["quality"] = {"accepted": False, "reasons": ["out of focus"]}
    web_env.store_result(ok)
    rid = web_env.store_result(bad)
    client = client_for(web_env, "viewer")
    assert "1 result<" in client.get("/?needs_review=1").text
    page = client.get(f"/results/{rid}").text
    assert "Review needed" in page and "out of focus" in page


def test_result_page_lays_out_the_diagnosis(web_env):
    rid = web_env.store_result(result_with_diagnosis(1, labs={"fpg_mmol_l": 6.4, "hba1c_pct": 6.1,
                                                              "haemoglobinopathy": True}))
    page = client_for(web_env, "viewer").get(f"/results/{rid}").text
    assert "WHO/IDF 2006" in page  # the criterion's citation
    assert "Set aside" in page  # HbA1c excluded, with its reason
    for name in ("WHO", "ADA", "NICE"):
        assert f"<td>{name}</td>" in page  # each guideline's verdict
    assert "Given" in page and "fpg" not in page.split("Not given")[1].split("</dd>")[0]
    assert "Field image pending" in page and "Cell gallery pending" in page


def test_result2_cells_and_review_are_rendered(web_env):
    """A result carrying cells and a review object (result/2) is shown; result/1 rendering tolerates absence."""
    from server.validation import Accepted, canonical_json
    from runtime.delivery.topics import parse

    result = result_with_diagnosis(3)
    result["schema"] = "result/2"
    result["cells"] = {"columns": ["class", "number", "x", "y", "box_x", "box_y", "box_w", "box_h", "area_px",
                                   "confidence", "border"], "limit": 2000, "capped": False,
                       "items": [[2, 1, 40.0, 40.0, 20, 20, 40, 40, 1200, 0.61, 0],
                                 [3, 1, 9.0, 9.0, 5, 5, 8, 8, 50, 0.9, 0]]}
    result["review"] = {"needed": True, "reasons": ["low-confidence white cell wbc-1"]}
    result["counts"] = {"rbc": 0, "wbc": 1, "platelet": 1}  # counts are the cells
    result["sample"]["field_index"] = 2
    text = canonical_json(result)
    web_env.db.store.record(Accepted(parse("smearscope/v1/lab1/dev-a/results"), result, text, "f" * 64))
    client = client_for(web_env, "reviewer")
    page = client.get(f"/results/{result['result_id']}").text
    assert "low-confidence white cell wbc-1" in page
    assert f"{result['sample']['sample_id']}, field 3</dd>" in page  # counted from 1, as the overlay files are
    assert 'name="cell_wbc-1"' in page and "61 %" in page and 'name="cell_plt-1"' in page
    # Reclassify the doubtful white cell as a platelet: an amendment row, counts moved, the cell regrouped.
    response = client.post(f"/results/{result['result_id']}/review",
                           data={"csrf": csrf_of(page), "action": "amend", "cell_wbc-1": "platelet", "cell_plt-1": ""},
                           follow_redirects=False)
    assert response.status_code == 303
    page = client.get(f"/results/{result['result_id']}").text
    assert "cell wbc-1 wbc &rarr; platelet" in page
    counts = page.split('id="counts"')[1].split("</table>")[0]
    wbc_row = counts.split("white cells</td>")[1].split("</tr>")[0]
    plt_row = counts.split("platelets</td>")[1].split("</tr>")[0]
    assert f'<td class="num">{result["counts"]["wbc"] - 1}</td>' in wbc_row
    assert f'<td class="num">{result["counts"]["platelet"] + 1}</td>' in plt_row
    platelets = page.split("platelets <small>")[1].split("</section>")[0]
    assert 'name="cell_wbc-1"' in platelets.split("red cells <small>")[0]


def test_csv_export_follows_the_filter_and_defuses_formulas(web_env):
    web_env.store_result(result_with_diagnosis(1, sample_id="=HYPERLINK(1)"))
    web_env.store_result(result_with_diagnosis(2), site="lab2")
    response = client_for(web_env, "viewer").get("/export.csv?site=lab1")
    assert response.headers["content-type"].startswith("text/csv")
    rows = response.text.strip().splitlines()
    assert len(rows) == 2 and "'=HYPERLINK(1)" in rows[1] and ",lab1," in rows[1]


def test_devices_page_shows_status_last_result_and_model(web_env):
    from server.web.status import record_status

    rid = web_env.store_result(result_with_diagnosis(1))
    assert record_status(web_env.db, "smearscope/v1/lab1/dev-a/status", b"online")
    assert record_status(web_env.db, "smearscope/v1/lab1/dev-b/status", b"offline")
    assert not record_status(web_env.db, "smearscope/v1/lab1/dev-c/status", b"garbage")
    assert not record_status(web_env.db, "not/a/topic", b"online")
    page = client_for(web_env, "viewer").get("/devices").text
    assert "st-online" in page and "st-offline" in page and "dev-c" not in page
    assert rid in page and "unet-test" in page and "1 today" not in page.split("dev-b")[1]


def test_patient_trend_has_thresholds_and_predicted_crossing(web_env):
    for i, (day, fpg) in enumerate([("2024-01-10", 5.6), ("2024-07-10", 6.0), ("2025-01-10", 6.3),
                                    ("2025-07-10", 6.6)]):
        web_env.store_result(result_with_diagnosis(i, patient_id="p-trend", sample_id=f"S{i}",
                                                   labs={"fpg_mmol_l": fpg, "hba1c_pct": 5.5 + 0.1 * i,
                                                         "ogtt_2h_mmol_l": 7.0 + 0.5 * i},
                                                   created_at=f"{day}T09:00:00Z"))
    page = client_for(web_env, "viewer").get("/patients/p-trend").text
    assert page.count("<svg") == 6  # FPG, HbA1c, OGTT, three count plots
    assert "predicted 20" in page and "Predicted crossing" in page
    assert 'class="threshold"' in page and "WHO diabetes" in page
    assert "<script" not in page.split("<main>")[1].split("</main>")[0]  # readable without JavaScript


def test_review_verify_amend_is_audited_and_never_changes_the_result(web_env):
    result = result_with_diagnosis(1)
    rid = web_env.store_result(result)
    before = web_env.db.query("SELECT payload, content_sha256 FROM results WHERE result_id = ?", (rid,))
    client = client_for(web_env, "reviewer")
    token = csrf_of(client.get(f"/results/{rid}").text)
    response = client.post(f"/results/{rid}/review", data={"csrf": token, "action": "amend", "count_wbc": "5",
                                                           "comment": "two smudge cells"}, follow_redirects=False)
    assert response.status_code == 303
    page = client.get(f"/results/{rid}").text
    assert "b-amended" in page and "wbc count 1 &rarr; 5" in page and "two smudge cells" in page
    client.post(f"/results/{rid}/review", data={"csrf": token, "action": "verify"})
    rows = web_env.db.query("SELECT user_name, action, changes FROM reviews WHERE result_id = ? ORDER BY id", (rid,))
    assert [(r[0], r[1]) for r in rows] == [("reviewer", "amend"), ("reviewer", "verify")]
    assert json.loads(rows[0][2]) == {"counts": {"wbc": 5}}
    assert web_env.db.query("SELECT payload, content_sha256 FROM results WHERE result_id = ?", (rid,)) == before
    report = client.get(f"/results/{rid}/report").text
    assert "Verified</strong> by reviewer" in report
    assert "verified" in client.get("/?review=verified").text


def test_amendment_without_change_and_bad_values_are_refused(web_env):
    rid = web_env.store_result(result_with_diagnosis(1))
    client = client_for(web_env, "reviewer")
    token = csrf_of(client.get(f"/results/{rid}").text)
    for data in ({"action": "amend"}, {"action": "amend", "count_rbc": "-3"}, {"action": "amend", "cell_x": "wbc"},
                 {"action": "delete"}, {"action": "comment"}):
        assert client.post(f"/results/{rid}/review", data={"csrf": token, **data}).status_code == 400, data
    assert web_env.db.query("SELECT COUNT(*) FROM reviews")[0][0] == 0


def test_one_view_indexes_every_new_result_in_batches(web_env):
    for i in range(7):
        web_env.store_result(result_with_diagnosis(i))
    assert web_env.db.sync_meta(batch=3) == 7
    assert web_env.db.sync_meta(batch=3) == 0
    assert web_env.db.query("SELECT COUNT(*) FROM result_meta")[0][0] == 7
