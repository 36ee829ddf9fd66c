"""Shared fixtures: the repository root, the shared real data, a click CliRunner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ["SMEARSCOPE_DATA"]) if os.environ.get("SMEARSCOPE_DATA") else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the full data sets (TXL-PBC, diabetes tables), not found at {SHARED_DATA}: "
                    "see the README's 'Data' section (../shared/data beside the checkout, or SMEARSCOPE_DATA)")
    return SHARED_DATA


@pytest.fixture()
def cli_runner():
    from click.testing import CliRunner

    return CliRunner()


@pytest.fixture()
def local_broker(tmp_path: Path):
    """A private Mosquitto on loopback (plain MQTT), as the demo starts it."""
    from runtime.delivery.mosquitto import LocalMosquitto, find_mosquitto

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (make test installs it as root; else apt-get install mosquitto)")
    broker = LocalMosquitto(tmp_path / "broker").start()
    yield broker
    broker.stop()
