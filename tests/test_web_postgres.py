"""The web app's SQL on a real PostgreSQL: inbox index, filters, reviews, device status, users."""

from __future__ import annotations

import pytest

from mqtt_helpers import postgres_url  # noqa: F401 (fixture)
from web_fixtures import client_for, csrf_of, make_env, result_with_diagnosis


@pytest.mark.postgres
def test_review_flow_and_filters_on_postgresql(tmp_path, postgres_url):
    from server.store import Store
    from server.web.status import record_status

    with Store(postgres_url)._transaction() as cur:
        cur.execute("DROP TABLE IF EXISTS users, sessions, reviews, result_meta, device_status, result_images")
        cur.execute("TRUNCATE results, rejections, deliveries")
    env = make_env(tmp_path, database=postgres_url)
    try:
        ids = [env.store_result(result_with_diagnosis(i, patient_id="p-pg", sample_id=f"S{i}",
                                                      created_at=f"2026-0{1 + i}-10T09:00:00Z")) for i in range(3)]
        bad = result_with_diagnosis(9)
        bad["quality"] = {"accepted": False, "reasons": ["blurred"]}
        env.store_result(bad, site="lab2")
        assert record_status(env.db, "smearscope/v1/lab1/dev-a/status", b"online")
        assert record_status(env.db, "smearscope/v1/lab1/dev-a/status", b"offline")
        client = client_for(env, "reviewer")
        assert "4 results" in client.get("/").text
        assert "1 result<" in client.get("/?needs_review=1&site=lab2").text
        assert "1 result<" in client.get("/?from=2026-02-01&to=2026-02-28").text
        token = csrf_of(client.get(f"/results/{ids[0]}").text)
        assert client.post(f"/results/{ids[0]}/review", data={"csrf": token, "action": "amend", "count_rbc": "90"},
                           follow_redirects=False).status_code == 303
        assert "1 result<" in client.get("/?review=amended").text
        devices = client.get("/devices").text
        assert "st-offline" in devices and "st-online" not in devices
        patient = client.get("/patients/p-pg").text
        assert patient.count("<svg") == 6
    finally:
        env.db.close()
