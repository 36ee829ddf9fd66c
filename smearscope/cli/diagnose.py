"""`smearscope diagnose`: diabetes decision support for one patient (an option per input) or a
CSV batch. Only click and the standard library are imported here; the engine and ONNX Runtime
are imported inside the command."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import click

# (option, batch column, help). Lab tests take a number with an optional unit ("126 mg/dL").
TEST_OPTIONS = (
    ("--fpg", "fpg", "Fasting plasma glucose, e.g. 7.0 or '126 mg/dL'."),
    ("--ogtt-1h", "ogtt_1h", "1-h glucose of a 75 g OGTT (pregnancy criteria)."),
    ("--ogtt-2h", "ogtt_2h", "2-h glucose of a 75 g OGTT."),
    ("--random-glucose", "random_glucose", "Random plasma glucose (diagnostic only with --symptoms 1)."),
    ("--hba1c", "hba1c", "HbA1c, e.g. 6.5 or '48 mmol/mol'."),
)
PATIENT_OPTIONS = (
    ("--age", "age", "Age in years."),
    ("--sex", "sex", "F or M."),
    ("--bmi", "bmi", "Body-mass index, kg/m²."),
    ("--pregnant", "pregnant", "1 if pregnant, 0 if not (pregnancy criteria; HbA1c excluded)."),
    ("--pregnancies", "pregnancies", "Number of pregnancies."),
    ("--symptoms", "symptoms", "1 if classic hyperglycaemia symptoms are present."),
    ("--diastolic-bp", "diastolic_bp_mmhg", "Diastolic blood pressure, mmHg."),
    ("--triceps-skinfold", "triceps_skinfold_mm", "Triceps skinfold, mm."),
    ("--insulin-2h", "insulin_2h_uu_ml", "2-h serum insulin, µU/mL."),
    ("--diabetes-pedigree", "diabetes_pedigree", "Diabetes pedigree function."),
    ("--urea", "urea_mmol_l", "Urea, mmol/L."),
    ("--creatinine", "creatinine_umol_l", "Creatinine, µmol/L."),
    ("--cholesterol", "cholesterol_mmol_l", "Total cholesterol, mmol/L."),
    ("--triglycerides", "triglycerides_mmol_l", "Triglycerides, mmol/L."),
    ("--hdl", "hdl_mmol_l", "HDL cholesterol, mmol/L."),
    ("--ldl", "ldl_mmol_l", "LDL cholesterol, mmol/L."),
    ("--vldl", "vldl_mmol_l", "VLDL cholesterol, mmol/L."),
    ("--c-peptide", "c_peptide_pmol_l", "C-peptide, pmol/L."),
    ("--gad-positive", "gad_positive", "1/0: GAD autoantibodies positive/negative."),
    ("--ia2-positive", "ia2_positive", "1/0: IA-2 autoantibodies positive/negative."),
    ("--znt8-positive", "znt8_positive", "1/0: ZnT8 autoantibodies positive/negative."),
    ("--ketones", "ketones", "1 if ketones are present."),
    ("--haemoglobin", "haemoglobin_g_l", "Haemoglobin, g/L (WHO anaemia cut-offs exclude HbA1c)."),
    ("--haemoglobinopathy", "haemoglobinopathy", "1 if a haemoglobinopathy/variant is known."),
    ("--recent-transfusion", "recent_transfusion", "1 after a recent transfusion."),
    ("--recent-blood-loss", "recent_blood_loss", "1 after recent blood loss."),
    ("--haemodialysis", "haemodialysis", "1 if on haemodialysis."),
    ("--erythropoietin", "erythropoietin", "1 if on erythropoietin therapy."),
    ("--rbc-per-field", "rbc_per_field", "Smear: mean red cells per field."),
    ("--wbc-per-field", "wbc_per_field", "Smear: mean white cells per field."),
    ("--platelet-per-field", "platelet_per_field", "Smear: mean platelets per field."),
    ("--rbc-area-pct", "rbc_area_pct", "Smear: % of the field covered by red cells."),
    ("--field-area-um2", "field_area_um2", "Smear: field area in µm² (calibrated)."),
    ("--mean-rbc-diameter-um", "mean_rbc_diameter_um", "Smear: mean red-cell diameter, µm (calibrated)."),
    ("--rbc-diameter-cv-pct", "rbc_diameter_cv_pct", "Smear: red-cell diameter CV, % (calibrated)."),
    ("--smear-fields", "smear_fields", "Smear: number of fields averaged."),
)
OPTION_FOR_COLUMN = {col: opt for opt, col, _ in TEST_OPTIONS + PATIENT_OPTIONS}
ADDED_COLUMNS = ("guideline_status", "confirmation_needed", "model_class", "p_normal", "p_prediabetes",
                 "p_diabetes", "network_not_used", "hba1c_excluded", "followup", "error")


def _param_name(option: str) -> str:
    return "in_" + option.lstrip("-").replace("-", "_")


def _input_options(func):
    for opt, _col, help_text in reversed(TEST_OPTIONS + PATIENT_OPTIONS):
        func = click.option(opt, _param_name(opt), type=str, default=None, metavar="VALUE", help=help_text)(func)
    return func


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--guideline", type=click.Choice(["who", "ada", "nice"], case_sensitive=False), default="ada",
              show_default=True, help="Diagnostic guideline.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--batch", "batch_in", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV of patients (columns named as in docs/diagnosis.md); needs --out.")
@click.option("--out", "batch_out", type=click.Path(dir_okay=False, path_type=Path), help="Output CSV for --batch.")
@click.option("--glucose-unit", default="mmol/L", show_default=True,
              help="Unit of glucose options given without one (mmol/L or mg/dL).")
@click.option("--hba1c-unit", default="%", show_default=True,
              help="Unit of --hba1c given without one (% or mmol/mol).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Diagnosis network (default models/diagnosis.onnx).")
@click.option("--no-model", is_flag=True, help="Guideline rules only, no network probabilities.")
@_input_options
def diagnose(guideline: str, as_json: bool, batch_in: Path | None, batch_out: Path | None,
             glucose_unit: str, hba1c_unit: str, model_path: Path | None, no_model: bool, **values: str | None) -> None:
    """Diabetes status under WHO, ADA or NICE criteria (pregnancy: IADPSG / NICE NG3), with HbA1c
    reliability, type assessment, network probabilities and follow-up tests.

    \b
    One patient:  smearscope diagnose --fpg 126mg/dL --hba1c 6.1 --age 50 --bmi 31
    A batch:      smearscope diagnose --batch IN.csv --out OUT.csv --guideline who

    Each value is compared with the guideline's cut-point in the unit it was given in.
    Decision support only: results need a clinician's review.
    """
    from runtime.contracts.errors import SmearscopeError
    from smearscope.cli.entry import UserError

    guideline = guideline.lower()
    try:
        network = None if no_model else _load_network(model_path)
        if batch_in is not None:
            if batch_out is None:
                raise click.UsageError("--batch needs --out")
            given = [opt for opt, _c, _h in TEST_OPTIONS + PATIENT_OPTIONS if values[_param_name(opt)] is not None]
            if given:
                raise click.UsageError(f"--batch takes patients from the CSV; drop {', '.join(given)}")
            if _run_batch(batch_in, batch_out, guideline, network):
                sys.exit(1)  # output written; some rows failed (listed on stderr)
            return
        mapping = {col: values[_param_name(opt)] for opt, col, _h in TEST_OPTIONS + PATIENT_OPTIONS
                   if values[_param_name(opt)] is not None}
        if not mapping:
            raise click.UsageError("give at least one input (e.g. --fpg 7.2) or --batch IN.csv --out OUT.csv")
        _inputs, report = _diagnose_mapping(mapping, guideline, network, glucose_unit, hba1c_unit)
    except SmearscopeError as exc:
        # unusable input: exit 2, since 1 means "batch written, some rows failed"
        raise UserError(str(exc) if batch_in is not None else _name_options(exc), 2) from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(_text(report))


def _load_network(model_path: Path | None):
    from runtime.diagnosis.network import DiagnosisNetwork

    return DiagnosisNetwork.load(model_path)


def _diagnose_mapping(mapping: dict[str, Any], guideline: str, network, glucose_unit: str = "mmol/L",
                      hba1c_unit: str = "%"):
    from runtime.diagnosis import diagnose as run_diagnosis, patient_inputs_from_mapping, smear_from_mapping

    inputs = patient_inputs_from_mapping(mapping, glucose_unit=glucose_unit, hba1c_unit=hba1c_unit)
    return inputs, run_diagnosis(inputs, guideline, smear_from_mapping(mapping), network)


def _name_options(exc: Exception) -> str:
    """Error text with CLI option names instead of column names."""
    errors = getattr(exc, "errors", None) or [exc]
    parts = []
    for e in errors:
        field = getattr(e, "field", None)
        if field is None:
            parts.append(str(e))
            continue
        test = next((c for c in OPTION_FOR_COLUMN if field == c or field.startswith(c + "_")), field)
        parts.append(f"{OPTION_FOR_COLUMN.get(test, field)}: {e.reason}")
    return "; ".join(parts)


def _text(report) -> str:
    d = report.to_dict()
    lines = [f"guideline: {d['guideline'].upper()} ({d['population']})",
             f"status: {d['status']}" + (f" ({d['category']})" if d["category"] and d["category"] != d["status"] else "")
             + ("  - confirmation needed" if d["confirmation_needed"] else "")]
    if d.get("confirmation_reason"):
        lines.append(f"  {d['confirmation_reason']}")
    if d["criteria"]:
        lines.append("criteria met:")
        lines += [f"  {c['label']} {c['value']:g} {c['unit']} >= {c['threshold']:g} {c['unit']} -> {c['category']}"
                  f"  [{c['citation']}]" for c in d["criteria"]]
    h = d["hba1c_excluded"]
    lines.append("HbA1c: excluded - " + "; ".join(h["reasons"]) if h["excluded"] else "HbA1c: usable")
    if d["probabilities"]:
        seen = d.get("network") or {}
        basis = f" (from {', '.join(seen.get('inputs_used') or [])}" + (
            f"; not seen: {', '.join(seen['inputs_not_used'])})" if seen.get("inputs_not_used") else ")")
        lines.append("network" + basis + ": " + ", ".join(f"{k[2:]} {v:.2f}" for k, v in d["probabilities"].items()))
    t = d["type"]
    if t["label"] != "not_applicable":
        probs = ", ".join(f"{k} {v:.2f}" for k, v in (t["probabilities"] or {}).items())
        lines.append(f"type: {t['label']}" + (f" ({probs})" if probs else "") + f" - {t['note']}")
    if d["followup"]:
        lines.append("follow-up:")
        lines += [f"  {f['test']} - {f['reason']}  [{f['citation']}]" for f in d["followup"]]
    if d["flags"]:
        lines.append("notes:")
        lines += [f"  {f}" for f in d["flags"] if f != d.get("confirmation_reason")]
    return "\n".join(lines)


def _run_batch(path_in: Path, path_out: Path, guideline: str, network) -> int:
    """Diagnose every row; rows with bad values get an `error` and the rest still run. Returns
    the number of failed rows (summarised on stderr)."""
    from runtime.contracts.csvtable import read_csv_table
    from runtime.contracts.errors import DataError
    from runtime.diagnosis.inputs import classify_column

    table = read_csv_table(path_in)  # a duplicated column or a row's extra cell is refused, naming it
    columns, rows = table.columns, table.rows
    try:
        kinds = {c: classify_column(c) for c in columns}
    except DataError as exc:  # a lab column with an unknown unit: no row can be read safely
        raise DataError(f"{path_in}: column {exc}") from exc
    ignored = [c for c, k in kinds.items() if k == "other" and c not in ADDED_COLUMNS]
    if ignored:
        click.echo(f"note: columns not used as inputs (kept in the output): {', '.join(ignored)}", err=True)
    reports: list[Any] = []
    patients: list[Any] = []
    errors: list[str | None] = []
    with click.progressbar(rows, label="diagnosing", file=sys.stderr) as bar:
        for row in bar:
            mapping = {k: v for k, v in row.items() if k is not None and k not in ADDED_COLUMNS}
            try:
                inputs, report = _diagnose_mapping(mapping, guideline, None)
                patients.append(inputs)
                reports.append(report)
                errors.append(None)
            except DataError as exc:
                patients.append(None)
                reports.append(None)
                errors.append("; ".join(f"column {e.field}: {e.reason}" if hasattr(e, "field") else str(e)
                                        for e in (getattr(exc, "errors", None) or [exc])))
    probabilities = _batch_probabilities(network, reports, patients)
    out_columns = columns + [c for c in ADDED_COLUMNS if c not in columns]
    path_out.parent.mkdir(parents=True, exist_ok=True)
    with path_out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=out_columns, extrasaction="ignore")
        writer.writeheader()
        for row, inputs, report, error, probs in zip(rows, patients, reports, errors, probabilities):
            writer.writerow({**row, **_added(inputs, report, error, probs)})
    failed = [(i + 1, e) for i, e in enumerate(errors) if e]
    click.echo(f"{len(rows) - len(failed)} of {len(rows)} rows diagnosed ({guideline.upper()}); wrote {path_out}",
               err=True)
    for n, e in failed:
        click.echo(f"error: row {n}: {e}", err=True)
    return len(failed)


def _batch_probabilities(network, reports: list[Any], patients: list[Any]) -> list[dict[str, float] | None]:
    """The network on all diagnosable rows at once (HbA1c masked where it was excluded)."""
    if network is None:
        return [None] * len(reports)
    idx = [i for i, r in enumerate(reports) if r is not None]
    preds = network.predict_many([patients[i] for i in idx], [reports[i].hba1c_excluded.excluded for i in idx])
    out: list[dict[str, float] | None] = [None] * len(reports)
    for i, p in zip(idx, preds):
        out[i] = p
    return out


def _added(inputs, report, error: str | None, probs: dict[str, float] | None) -> dict[str, Any]:
    from runtime.diagnosis.features import network_view

    if report is None:
        return {c: "" for c in ADDED_COLUMNS} | {"error": error or ""}
    not_seen = network_view(inputs, exclude_hba1c=report.hba1c_excluded.excluded)["inputs_not_used"] if probs else []
    probs = probs or {}
    return {
        "guideline_status": report.status,
        "confirmation_needed": int(report.confirmation_needed),
        "model_class": max(probs, key=probs.get).removeprefix("p_") if probs else "",
        "p_normal": probs.get("p_normal", ""),
        "p_prediabetes": probs.get("p_prediabetes", ""),
        "p_diabetes": probs.get("p_diabetes", ""),
        "network_not_used": " ".join(not_seen),
        "hba1c_excluded": int(report.hba1c_excluded.excluded),
        "followup": "; ".join(f.test for f in report.followup),
        "error": "",
    }
