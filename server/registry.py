"""Patient registry: results grouped by pseudonymous patient id, with history and trends.

A visit is one sample (several fields may belong to it). FPG, HbA1c and 2-h OGTT glucose come from
the lab values the sample carried (`fpg_mmol_l`/`fpg_mg_dl`, `hba1c_pct`/`hba1c_mmol_mol`,
`ogtt_2h_mmol_l`/`ogtt_2h_mg_dl`). Each analyte's trend is an ordinary least-squares line over
visit dates, with the slope's standard error and 95 % interval (Student t). A date for crossing the
diabetes cut-point (FPG 7.0 mmol/L, HbA1c 6.5 %, OGTT 11.1 mmol/L; WHO and ADA) is predicted only when the value is still below it and the whole 95 % interval of the slope is
rising; the range comes from the interval's two ends, pivoting at the data's centroid.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from runtime.diagnosis.units import mg_dl_to_mmol_l, mmol_mol_to_pct
from server.store import Store

#: (key in sample.labs, conversion to the analyte's unit) in order of preference.
ANALYTES: dict[str, tuple[str, float, tuple[tuple[str, Callable[[float], float]], ...]]] = {
    "fpg": ("mmol/L", 7.0, (("fpg_mmol_l", float), ("fpg_mg_dl", mg_dl_to_mmol_l))),
    "hba1c": ("%", 6.5, (("hba1c_pct", float), ("hba1c_mmol_mol", mmol_mol_to_pct))),
    "ogtt": ("mmol/L", 11.1, (("ogtt_2h_mmol_l", float), ("ogtt_2h_mg_dl", mg_dl_to_mmol_l))),
}
ANALYTE_NAMES = {"fpg": "FPG", "hba1c": "HbA1c", "ogtt": "OGTT 2-h glucose"}

# Two-sided 95 % Student t quantiles for 1..30 degrees of freedom; 1.96 beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
DAYS_PER_YEAR = 365.25


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


@dataclass
class Visit:
    """One sample of one patient."""

    when: datetime
    sample_id: str
    fields: int
    status: str | None
    labs: dict[str, float] = field(default_factory=dict)  # analyte -> value in its unit
    counts: dict[str, list[int]] = field(default_factory=dict)  # class -> counts of the visit's accepted fields

    def mean_counts(self) -> dict[str, float]:
        """Cells per accepted field, by class (empty when no field was accepted)."""
        return {k: sum(v) / len(v) for k, v in self.counts.items() if v}


@dataclass
class Trend:
    """A least-squares line of one analyte over visits."""

    analyte: str
    unit: str
    n: int
    cut_point: float
    latest: float | None
    slope_per_year: float | None = None
    slope_ci95: tuple[float, float] | None = None
    intercept: float | None = None  # value at the first visit's date
    residual_sd: float | None = None
    crossing: datetime | None = None
    crossing_range: tuple[datetime, datetime] | None = None
    note: str = ""


@dataclass
class PatientHistory:
    patient_id: str
    visits: list[Visit]
    trends: dict[str, Trend]


def fit_trend(points: list[tuple[datetime, float]], analyte: str) -> Trend:
    """OLS of value on time (years) with uncertainty and, when supported, the cut-point crossing date."""
    unit, cut, _ = ANALYTES[analyte]
    points = sorted(points)
    trend = Trend(analyte, unit, len(points), cut, points[-1][1] if points else None)
    if len(points) < 2:
        trend.note = "needs at least 2 visits for a trend"
        return trend
    t0 = points[0][0]
    xs = [(t - t0).total_seconds() / 86400 / DAYS_PER_YEAR for t, _ in points]
    ys = [v for _, v in points]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        trend.note = "all visits on the same day"
        return trend
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    trend.slope_per_year, trend.intercept = slope, intercept
    if n < 3:
        trend.note = "needs at least 3 visits for an uncertainty"
        return trend
    rss = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    trend.residual_sd = math.sqrt(rss / (n - 2))
    se = trend.residual_sd / math.sqrt(sxx)
    half = t975(n - 2) * se
    trend.slope_ci95 = (slope - half, slope + half)
    fitted_now = intercept + slope * xs[-1]
    if fitted_now >= cut:
        trend.note = f"already at or above the cut-point ({cut:g} {unit})"
    elif trend.slope_ci95[0] <= 0:
        trend.note = "no rising trend supported by the data (95 % interval of the slope includes 0)"
    else:
        def when(s: float) -> datetime:
            return t0 + timedelta(days=(mx + (cut - my) / s) * DAYS_PER_YEAR)

        trend.crossing = when(slope)
        trend.crossing_range = (when(trend.slope_ci95[1]), when(trend.slope_ci95[0]))
        trend.note = "rising; predicted crossing of the cut-point"
    return trend


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _lab(labs: dict[str, Any], analyte: str) -> float | None:
    for key, convert in ANALYTES[analyte][2]:
        value = labs.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return convert(float(value))
    return None


def patient_history(store: Store, patient_id: str) -> PatientHistory | None:
    """Every stored result of one pseudonymous patient, grouped into visits, with trends; None if unknown."""
    rows = store.query("SELECT payload FROM results WHERE patient_id = ? ORDER BY created_at, seq", (patient_id,))
    if not rows:
        return None
    visits: dict[str, Visit] = {}
    for (payload,) in rows:
        result = json.loads(payload)
        sample = result["sample"]
        when = _parse_time(result["created_at"])
        visit = visits.get(sample["sample_id"])
        if visit is None:
            visit = visits[sample["sample_id"]] = Visit(when, sample["sample_id"], 0, None)
        visit.fields += 1
        visit.when = min(visit.when, when)
        if (result.get("quality") or {}).get("accepted"):
            for cls, n in (result.get("counts") or {}).items():
                if isinstance(n, int):
                    visit.counts.setdefault(cls, []).append(n)
        status = (result.get("diagnosis") or {}).get("status")
        visit.status = status or visit.status
        for analyte in ANALYTES:
            value = _lab(sample.get("labs") or {}, analyte)
            if value is not None:
                visit.labs.setdefault(analyte, value)
    ordered = sorted(visits.values(), key=lambda v: v.when)
    trends = {a: fit_trend([(v.when, v.labs[a]) for v in ordered if a in v.labs], a) for a in ANALYTES}
    return PatientHistory(patient_id, ordered, trends)


def list_patients(store: Store) -> list[tuple[str, int, int, str]]:
    """(patient_id, samples, results, last result time) for every known patient."""
    return [tuple(r) for r in store.query(
        "SELECT patient_id, COUNT(DISTINCT sample_id), COUNT(*), MAX(created_at) FROM results"
        " WHERE patient_id IS NOT NULL GROUP BY patient_id ORDER BY MAX(created_at) DESC")]


def format_history(history: PatientHistory) -> str:
    """A readable report for a terminal."""
    lines = [f"patient {history.patient_id}: {len(history.visits)} visit(s)", ""]
    lines.append(f"  {'date':<11} {'sample':<16} {'fields':>6} {'FPG mmol/L':>11} {'HbA1c %':>8}  status")
    for v in history.visits:
        fpg, a1c = v.labs.get("fpg"), v.labs.get("hba1c")
        lines.append(f"  {v.when:%Y-%m-%d} {v.sample_id[:16]:<16} {v.fields:>6} "
                     f"{'' if fpg is None else f'{fpg:.1f}':>11} {'' if a1c is None else f'{a1c:.1f}':>8}  "
                     f"{v.status or '-'}")
    lines.append("")
    for t in history.trends.values():
        name = ANALYTE_NAMES[t.analyte]
        head = f"  {name} trend ({t.n} visit(s), cut-point {t.cut_point:g} {t.unit})"
        if t.slope_per_year is None:
            lines.append(f"{head}: {t.note}")
            continue
        slope = f"{t.slope_per_year:+.2f} {t.unit}/year"
        if t.slope_ci95:
            slope += f" (95 % CI {t.slope_ci95[0]:+.2f} to {t.slope_ci95[1]:+.2f}; residual SD {t.residual_sd:.2f})"
        lines.append(f"{head}: {slope}")
        if t.crossing and t.crossing_range:
            lines.append(f"    predicted crossing {t.crossing:%Y-%m-%d} "
                         f"(range {t.crossing_range[0]:%Y-%m-%d} to {t.crossing_range[1]:%Y-%m-%d})")
        else:
            lines.append(f"    {t.note}")
    return "\n".join(lines)
