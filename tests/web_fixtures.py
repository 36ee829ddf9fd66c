"""A web app over a real SQLite database in a temp folder, its users, and stored results."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mqtt_helpers import make_result

PASSWORD = "correct horse battery"
ROLES = ("viewer", "reviewer", "admin")


@dataclass
class WebEnv:
    config: Any
    db: Any
    app: Any
    tmp: Path

    def store_result(self, result: dict[str, Any], site: str = "lab1") -> str:
        """Store a result through the subscriber's own checks, as a device's message would be."""
        from server.validation import Accepted, check_message

        checked = check_message(f"smearscope/v1/{site}/{result['device_id']}/results",
                                json.dumps(result).encode(), self.config.max_payload_bytes)
        assert isinstance(checked, Accepted), checked
        self.db.store.record(checked)
        return result["result_id"]


def make_env(tmp: Path, database: str | None = None, **web: Any) -> WebEnv:
    from server.config import ServerConfig
    from server.store import Store
    from server.web.app import create_app
    from server.web.auth import Accounts
    from server.web.db import Database

    config = ServerConfig.from_dict({"database": database or f"sqlite:///{tmp / 'server.sqlite3'}",
                                     "web": {"images_dir": str(tmp / "images"), **web}}, base_dir=tmp)
    db = Database(Store(config.database_url()))
    accounts = Accounts(db)
    for role in ROLES:
        accounts.add(role, PASSWORD, role)
    return WebEnv(config, db, create_app(config, db), tmp)


@pytest.fixture()
def web_env(tmp_path: Path):
    env = make_env(tmp_path)
    yield env
    env.db.close()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


def sign_in(client: Any, name: str, password: str = PASSWORD) -> Any:
    page = client.get("/login")
    return client.post("/login", data={"username": name, "password": password, "csrf": csrf_of(page.text),
                                       "next": "/"}, follow_redirects=False)


def client_for(env: WebEnv, role: str | None):
    from fastapi.testclient import TestClient

    client = TestClient(env.app)
    if role:
        response = sign_in(client, role)
        assert response.status_code == 303, response.text
    return client


def result_with_diagnosis(seq: int, **kw: Any) -> dict[str, Any]:
    """A result/1 carrying a real diagnosis computed by the runtime from its lab values."""
    from runtime.diagnosis import diagnose

    labs = kw.pop("labs", {"fpg_mmol_l": 6.4, "hba1c_pct": 6.1})
    result = make_result("dev-a", seq, labs=labs, **kw)
    result["diagnosis"] = diagnose(labs, guideline="who").to_dict()
    return result
