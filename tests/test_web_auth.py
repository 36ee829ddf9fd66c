"""Sign-in, sessions, CSRF, roles, rate limiting, the access log and the users command."""

from __future__ import annotations

import logging

from smearscope.cli import cli
from web_fixtures import PASSWORD, client_for, csrf_of, make_env, result_with_diagnosis, sign_in, web_env  # noqa: F401


def test_sign_in_sets_a_hardened_session_cookie(web_env):
    from fastapi.testclient import TestClient

    response = sign_in(TestClient(web_env.app), "viewer")
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "smearscope_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    stored = web_env.db.query("SELECT token_sha256 FROM sessions")[0][0]
    token = response.cookies["smearscope_session"]
    assert token not in stored  # only the hash is kept
    assert web_env.db.query("SELECT password_hash FROM users WHERE name = 'viewer'")[0][0].startswith("$argon2id$")


def test_wrong_password_disabled_user_and_missing_token(web_env):
    from fastapi.testclient import TestClient

    from server.web.auth import Accounts

    client = TestClient(web_env.app)
    assert sign_in(client, "viewer", "wrong password!").status_code == 401
    assert sign_in(client, "nobody").status_code == 401
    Accounts(web_env.db).disable("reviewer")
    assert sign_in(client, "reviewer").status_code == 401
    client.get("/login")
    no_token = client.post("/login", data={"username": "admin", "password": PASSWORD})
    assert no_token.status_code == 400


def test_disabling_a_user_ends_its_sessions(web_env):
    from server.web.auth import Accounts

    client = client_for(web_env, "reviewer")
    assert client.get("/", follow_redirects=False).status_code == 200
    Accounts(web_env.db).disable("reviewer")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_sign_in_is_rate_limited(tmp_path):
    from fastapi.testclient import TestClient

    env = make_env(tmp_path, login_attempts=3, login_window_s=600)
    client = TestClient(env.app)
    codes = [sign_in(client, "admin", "bad password").status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    blocked = sign_in(client, "admin")  # the right password, but too soon
    assert blocked.status_code == 429 and "too many failed sign-ins" in blocked.text
    env.db.close()


def test_sign_in_never_redirects_off_site(web_env):
    from fastapi.testclient import TestClient

    client = TestClient(web_env.app)
    token = csrf_of(client.get("/login").text)
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil"):
        response = client.post("/login", data={"username": "viewer", "password": PASSWORD, "csrf": token,
                                               "next": target}, follow_redirects=False)
        assert response.headers["location"] == "/", target
        client.cookies.clear()
        token = csrf_of(client.get("/login").text)


def test_posts_need_session_token_and_role(web_env):
    from fastapi.testclient import TestClient

    rid = web_env.store_result(result_with_diagnosis(1))
    url = f"/results/{rid}/review"
    assert TestClient(web_env.app).post(url, data={"action": "verify"}).status_code == 401
    viewer = client_for(web_env, "viewer")
    token = csrf_of(viewer.get(f"/results/{rid}").text)
    assert viewer.post(url, data={"action": "verify"}).status_code == 400  # no CSRF token
    assert viewer.post(url, data={"action": "verify", "csrf": "forged"}).status_code == 400
    assert viewer.post(url, data={"action": "verify", "csrf": token}).status_code == 403
    assert viewer.post("/upload", data={"csrf": token}).status_code == 403
    reviewer = client_for(web_env, "reviewer")
    assert reviewer.post(url, data={"action": "verify", "csrf": token}).status_code == 400  # another session's token
    assert reviewer.post(url, data={"action": "verify"}).status_code == 400
    assert reviewer.post("/upload", data={}).status_code == 400
    assert reviewer.post("/logout", data={}).status_code == 400
    assert web_env.db.query("SELECT COUNT(*) FROM reviews")[0][0] == 0
    good = csrf_of(reviewer.get(f"/results/{rid}").text)
    assert reviewer.post(url, data={"action": "verify", "csrf": good}, follow_redirects=False).status_code == 303


def test_every_form_carries_a_csrf_token(web_env):
    rid = web_env.store_result(result_with_diagnosis(1))
    client = client_for(web_env, "admin")
    for url in ("/", f"/results/{rid}", "/upload", "/patients", "/devices", "/admin/users"):
        html = client.get(url).text
        for form in html.split('<form method="post"')[1:]:
            assert 'name="csrf"' in form.split("</form>")[0], url


def test_access_log_has_route_patterns_not_patient_ids(web_env, caplog):
    rid = web_env.store_result(result_with_diagnosis(1, patient_id="p-secret-123", sample_id="S-secret"))
    client = client_for(web_env, "viewer")
    with caplog.at_level(logging.INFO, logger="smearscope.web.access"):
        client.get("/patients/p-secret-123")
        client.get(f"/results/{rid}")
        client.get("/?patient=p-secret-123")
    lines = [r.getMessage() for r in caplog.records if r.name == "smearscope.web.access"]
    assert any("/patients/{patient_id} 200 viewer" in line for line in lines), lines
    assert any("/results/{result_id} 200" in line for line in lines), lines
    assert not any("secret" in line or rid in line for line in lines), lines


def test_users_command_add_list_disable(tmp_path, cli_runner):
    db = f"sqlite:///{tmp_path / 'u.sqlite3'}"
    added = cli_runner.invoke(cli, ["users", "add", "dr.ana", "--role", "reviewer", "--database", db],
                              input="long enough pw\nlong enough pw\n")
    assert added.exit_code == 0, added.output
    assert cli_runner.invoke(cli, ["users", "add", "dr.ana", "--role", "viewer", "--database", db,
                                   "--password", "another long pw"]).exit_code != 0
    short = cli_runner.invoke(cli, ["users", "add", "bob", "--role", "viewer", "--database", db, "--password", "short"])
    assert short.exit_code != 0 and "at least 10" in short.output
    listed = cli_runner.invoke(cli, ["users", "list", "--database", db])
    assert "dr.ana" in listed.output and "reviewer" in listed.output and "active" in listed.output
    assert cli_runner.invoke(cli, ["users", "disable", "dr.ana", "--database", db]).exit_code == 0
    assert "disabled" in cli_runner.invoke(cli, ["users", "list", "--database", db]).output


def test_admin_lists_and_disables_users_others_may_not(web_env):
    viewer, reviewer, admin = (client_for(web_env, r) for r in ("viewer", "reviewer", "admin"))
    assert viewer.get("/admin/users").status_code == 403
    assert reviewer.get("/admin/users").status_code == 403
    page = admin.get("/admin/users").text
    assert "reviewer" in page and "viewer" in page
    token = csrf_of(reviewer.get("/").text)
    assert reviewer.post("/admin/users/viewer/disable", data={"csrf": token}).status_code == 403
    admin_token = csrf_of(page)
    assert admin.post("/admin/users/viewer/disable", data={}).status_code == 400
    assert admin.post("/admin/users/admin/disable", data={"csrf": admin_token}).status_code == 400
    assert admin.post("/admin/users/nobody/disable", data={"csrf": admin_token}).status_code == 404
    assert admin.post("/admin/users/viewer/disable", data={"csrf": admin_token}, follow_redirects=False).status_code == 303
    assert viewer.get("/", follow_redirects=False).status_code == 303  # its session ended
