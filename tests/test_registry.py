"""Patient registry: visits by pseudonymous id, trends with uncertainty, cut-point crossing, CLI."""

from __future__ import annotations

import random
import statistics
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from mqtt_helpers import make_result

from runtime.delivery.outbox import encode_result
from server.config import ServerConfig
from server.registry import DAYS_PER_YEAR, fit_trend, patient_history
from server.service import ResultServer
from server.store import Store
from smearscope.cli import cli

T0 = datetime(2024, 1, 10, tzinfo=timezone.utc)


def _years(y: float) -> datetime:
    return T0 + timedelta(days=y * DAYS_PER_YEAR)


def test_exact_line_predicts_the_crossing_date() -> None:
    trend = fit_trend([(_years(0), 5.0), (_years(1), 5.5), (_years(2), 6.0)], "fpg")
    assert trend.slope_per_year == pytest.approx(0.5)
    assert trend.residual_sd == pytest.approx(0, abs=1e-9)
    assert abs((trend.crossing - _years(4)).total_seconds()) < 60  # 5.0 + 0.5/yr reaches 7.0 at 4 years


def test_slope_and_interval_match_an_independent_least_squares() -> None:
    rng = random.Random(3)
    xs = [0, 0.4, 1.1, 1.5, 2.2, 3.0, 3.3]
    pts = [(_years(x), 5.2 + 0.25 * x + rng.gauss(0, 0.15)) for x in xs]
    trend = fit_trend(pts, "hba1c")
    ys = [v for _, v in pts]
    ref = statistics.linear_regression(xs, ys)
    assert trend.slope_per_year == pytest.approx(ref.slope, rel=1e-6)
    assert trend.intercept == pytest.approx(ref.intercept, rel=1e-6)
    design = np.column_stack([np.ones(len(xs)), xs])
    coef, rss, *_ = np.linalg.lstsq(design, np.array(ys), rcond=None)
    cov = rss[0] / (len(xs) - 2) * np.linalg.inv(design.T @ design)
    half = 2.571 * np.sqrt(cov[1, 1])  # t(0.975, df=5)
    assert trend.slope_ci95 == pytest.approx((coef[1] - half, coef[1] + half), rel=1e-6)
    early, late = trend.crossing_range
    assert early < trend.crossing < late


def test_no_crossing_without_a_supported_rise_or_when_already_above() -> None:
    flat = fit_trend([(_years(0), 5.6), (_years(1), 5.2), (_years(2), 5.7), (_years(3), 5.3)], "fpg")
    assert flat.crossing is None and "includes 0" in flat.note
    above = fit_trend([(_years(0), 6.8), (_years(1), 7.2), (_years(2), 7.6)], "fpg")
    assert above.crossing is None and "above" in above.note
    two = fit_trend([(_years(0), 5.0), (_years(1), 6.0)], "fpg")
    assert two.slope_per_year == pytest.approx(1.0) and two.slope_ci95 is None and two.crossing is None


def _fill(store: Store, tmp_path: Path) -> None:
    server = ResultServer(ServerConfig.from_dict({"database": f"sqlite:///{tmp_path}/x.db"}), store=store)
    topic = "smearscope/v1/lab1/dev-a/results"
    labs = [{"fpg_mg_dl": 99.0, "hba1c_mmol_mol": 37.0}, {"fpg_mmol_l": 6.0, "hba1c_pct": 5.7},
            {"fpg_mmol_l": 6.5, "hba1c_pct": 6.0}]
    seq = 0
    for visit, lab in enumerate(labs):
        for field in range(2):  # two fields per sample
            when = (_years(visit * 0.5) + timedelta(minutes=field)).strftime("%Y-%m-%dT%H:%M:%SZ")
            r = make_result("dev-a", seq, patient_id="p-7f3a", labs=lab, created_at=when, sample_id=f"V{visit}")
            assert server.handle(topic, encode_result(r)).status == "stored"
            seq += 1
    other = make_result("dev-a", seq, patient_id="p-other", labs={"fpg_mmol_l": 9.0})
    server.handle(topic, encode_result(other))


def test_history_groups_fields_into_visits_and_converts_units(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'reg.db'}")
    _fill(store, tmp_path)
    history = patient_history(store, "p-7f3a")
    assert [v.sample_id for v in history.visits] == ["V0", "V1", "V2"]
    assert [v.fields for v in history.visits] == [2, 2, 2]
    assert history.visits[0].labs["fpg"] == pytest.approx(99.0 / 18.016)
    assert history.visits[0].labs["hba1c"] == pytest.approx(37.0 / 10.929 + 2.15)
    assert history.trends["fpg"].n == 3 and history.trends["fpg"].slope_per_year > 0
    assert patient_history(store, "nobody") is None


def test_patients_cli_show_and_list(tmp_path: Path, cli_runner) -> None:
    store = Store(f"sqlite:///{tmp_path / 'reg.db'}")
    _fill(store, tmp_path)
    store.close()
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    shown = cli_runner.invoke(cli, ["patients", "show", "p-7f3a", "--database", url])
    assert shown.exit_code == 0, shown.output
    assert "patient p-7f3a: 3 visit(s)" in shown.output
    assert "FPG trend (3 visit(s), cut-point 7 mmol/L)" in shown.output
    assert "predicted crossing" in shown.output
    listed = cli_runner.invoke(cli, ["patients", "list", "--database", url])
    assert listed.exit_code == 0 and "p-7f3a" in listed.output and "p-other" in listed.output
    missing = cli_runner.invoke(cli, ["patients", "show", "nobody", "--database", url])
    assert missing.exit_code == 1 and "error: no results for patient 'nobody'" in missing.output
