"""Reports as text tables (terminal) or Markdown, and the comparison of two reports.

A report is first turned into `Table`s (title, header, rows, notes); the two formatters only
lay those out, so the terminal and Markdown views always show the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from benchmarks.edge_bench.timing import ratio


ANALYZER_STAGES = ("quality", "preprocess", "inference", "postprocess", "diagnosis")


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}%"


def hw(value: list[int] | None) -> str:
    return "-" if not value else f"{value[0]}x{value[1]}"


def _stats_cells(stats: dict[str, Any] | None) -> list[str]:
    if not stats:
        return ["-"] * 4
    return [fmt(stats["p50"]), fmt(stats["p90"]), fmt(stats["p99"]), fmt(stats["mean"])]


def report_tables(report: dict[str, Any]) -> list[Table]:
    """Every section of a report as a table, the headline first."""
    headline = report.get("headline")
    return [
        *([_headline_table(report)] if headline else []),
        *([_baseline_table(headline)] if headline and headline["baseline"] else []),
        _summary_table(report),
        _machine_table(report),
        _peaks_table(report),
        _models_table(report),
        *[_pipeline_table(p, pipeline_label(report, p)) for p in report["pipelines"]],
        _sweep_table(report),
        _op_profile_table(report),
        _torch_table(report),
        _ratios_table(report),
    ]


def pipeline_label(report: dict[str, Any], p: dict[str, Any]) -> str:
    """'int8 calibrated', 'baseline int8 uncalibrated': what a pipeline entry measured. An
    edge-bench/1 entry ran with the field's calibration when the field had one."""
    calibrated = p.get("calibrated", report["settings"]["frame"].get("um_per_px") is not None)
    prefix = "baseline " if p.get("model_set") == "baseline" else ""
    return f"{prefix}{p['variant']} {'calibrated' if calibrated else 'uncalibrated'}"


def _headline_table(report: dict[str, Any]) -> Table:
    """The field end to end with and without its calibration, post-processing's share, the
    network's MAC/s against this run's peak, memory and load."""
    h, frame = report["headline"], report["settings"]["frame"]
    rows = []
    for mode in ("calibrated", "uncalibrated"):
        f = h["new"][mode]
        if f is None:
            rows.append([f"end to end, {mode}", "not measured: the field has no calibration (give --um-per-px)"])
            continue
        rows.append([f"end to end, {mode}, p50 / p95", f"{f['p50_ms']:.1f} / {f['p95_ms']:.1f} ms ({f['n']} runs)"])
        rows.append(["  post-processing p50, share", f"{fmt(f['postprocess_p50_ms'], 1)} ms, {pct(f['postprocess_share'])} "
                     f"of end to end (inference p50 {fmt(f['inference_p50_ms'], 1)} ms)"])
    net = h["network"]
    if net:
        gmac = "-" if net["macs"] is None else f"{net['macs'] / 1e9:.2f} GMAC"
        rows.append(["network alone", f"input {hw(net['input_hw'])} (HxW): {gmac} in {net['p50_ms']:.1f} ms p50 = "
                     f"{fmt(net['gmacs_per_s'], 1)} GMAC/s"])
        rows.append(["  of this run's matmul peak", f"{pct(net['of_peak'])} of {fmt(net['peak_gmacs_per_s'], 1)} GMAC/s "
                     f"({net['peak_kernel'] or 'no peak for this provider'}, {h['threads']} threads)"])
    device = h.get("device_process")
    if device:
        rows.append(["peak RSS, device process", _device_text(h["variant"], device)])
    rows.append(["peak RSS, whole bench process", f"{h['peak_rss_mb']:.0f} MB after the headline pipelines "
                 f"({h['pipelines']} alive at once)"])
    rows.append(["load average (1, 5, 15 min)", f"{_load(h['load_average_before'])} before, "
                 f"{_load(h['load_average_after'])} after the headline pipelines"])
    model = h["new"]["model"]
    title = f"Headline: {frame.get('kind', 'image')} field {_wxh(frame['frame_hw'])}, {h['variant']} model, {h['threads']} threads"
    notes = [f"field: {frame['source']}", f"model: {model['path']} ({model['name']} {model['version']}, "
             f"sha256 {model['sha256'][:12]})",
             "end to end = capture to published (every available stage, one field); calibrated: the field's "
             f"{fmt(frame.get('um_per_px'), 4)} um/px given; uncalibrated: red-cell size estimated, scale searched"]
    if h["runs_per_turn"]:
        notes.append(f"the {h['pipelines']} headline pipelines took turns of {h['runs_per_turn']} "
                     f"run{'s' if h['runs_per_turn'] != 1 else ''} on the same field (A B .. B A ...)")
    return Table(title, ["", ""], rows, notes)


def _device_text(variant: str, device: dict[str, Any]) -> str:
    """'153 MB: one int8 pipeline alone in a fresh process (calibrated 153, uncalibrated 164 MB; 15 runs each)'."""
    modes = ", ".join(f"{'calibrated' if m['calibrated'] else 'uncalibrated'} {m['peak_rss_mb']:.0f}"
                      for m in device["modes"])
    return (f"{device['peak_rss_mb']:.0f} MB: one {variant} pipeline alone in a fresh process "
            f"({modes} MB; {device['runs']} runs each)")


def _baseline_table(h: dict[str, Any]) -> Table:
    """New against baseline, measured in turns on the same field in this run."""
    new, base, over = h["new"], h["baseline"], h["new_over_baseline"]
    rows = []
    for mode in ("calibrated", "uncalibrated"):
        a, b = new[mode], base[mode]
        if a is None or b is None:
            continue
        rows.append([f"{mode} p50 ms", fmt(a["p50_ms"], 1), fmt(b["p50_ms"], 1), fmt(over[f"{mode}_p50"], 3)])
        rows.append([f"{mode} p95 ms", fmt(a["p95_ms"], 1), fmt(b["p95_ms"], 1), fmt(over[f"{mode}_p95"], 3)])
        for key, name in (("inference_p50_ms", "inference"), ("postprocess_p50_ms", "post-processing")):
            rows.append([f"  {name} p50 ms", fmt(a[key], 1), fmt(b[key], 1), fmt(ratio(a[key], b[key]), 3)])
    notes = [f"new: {new['model']['path']} ({new['model']['sha256'][:12]}); baseline: {base['model']['path']} "
             f"({base['model']['sha256'][:12]})",
             "both in one process on the same field, taking turns (see the headline); below 1 = the new set is faster"]
    return Table("New vs baseline (same field, same run)", ["", "new", "baseline", "new/baseline"], rows, notes)


def _wxh(frame_hw: list[int]) -> str:
    return f"{frame_hw[1]}x{frame_hw[0]}"


def _load(values: list[float] | None) -> str:
    return "not readable" if not values else " ".join(f"{v:.2f}" for v in values)


def _summary_table(report: dict[str, Any]) -> Table:
    """Every pipeline end to end, throughput, and the same-run ratios."""
    rows = []
    for p in report["pipelines"]:
        e2e = p["end_to_end_ms"]
        rows.append([f"{pipeline_label(report, p)} field end to end p50 / p90",
                     f"{e2e['p50']:.1f} / {e2e['p90']:.1f} ms ({p['threads']} threads)"])
        rows.append([f"{pipeline_label(report, p)} throughput", f"{fmt(p['fields_per_s'])} fields/s, "
                     f"{fmt(p['cells_per_min'], 0)} cells/min ({p['cells_per_field'].get('total', 0)} cells per field)"])
    r = report["ratios"]
    rows += [
        ["int8 / fp32 latency", fmt(r["int8_over_fp32"], 3)],
        ["ORT fp32 / PyTorch eager", fmt(r["ort_fp32_over_torch"], 3)],
        ["ORT int8 / PyTorch eager", fmt(r["ort_int8_over_torch"], 3)],
        ["efficiency fp32 / int8", f"{pct(r['efficiency_fp32'])} / {pct(r['efficiency_int8'])} of the matmul peak"],
    ]
    return Table("Summary", ["", ""], rows)


def _machine_table(report: dict[str, Any]) -> Table:
    m = report["machine"]
    freq, thr = m["frequency"], m["throttling"]
    ort = m["onnxruntime"]
    settings = report["settings"]
    frame = settings["frame"]
    rows = [
        ["CPU", f"{m['cpu_model']} ({m['arch']}), {m['cores_usable']} of {m['cores_logical']} cores usable"
         + (", virtualised" if m.get("virtualized") else "")],
        ["board", m.get("board") or "-"],
        ["flags", " ".join(m["flags"]) or "-"],
        ["ONNX Runtime", f"{ort['version']}; providers {', '.join(ort['providers'])}"],
        ["governor", f"{freq['governor'] or 'not readable'}; {fmt(freq['cur_mhz'], 0)} / {fmt(freq['max_mhz'], 0)} MHz"],
        ["throttling", f"{thr['throttled'] if thr['throttled'] is not None else 'not readable'}"
         + (f" ({thr['source']})" if thr["source"] else "")
         + "".join(f"; {k} {v:.0f} C" for k, v in thr["temperatures_c"].items())],
        ["load average", f"start {_load(m.get('load_average_start'))}, end {_load(m.get('load_average_end'))}"],
        ["frame", f"{frame['source']}: {_wxh(frame['frame_hw'])} px -> network input {hw(frame.get('network_hw'))} (HxW)"],
        ["runs", f"{settings['runs']} timed after {settings['warmup']} warm-up" + (" (--quick)" if settings["quick"] else "")],
        ["peak RSS, whole bench process", f"{report['memory']['peak_rss_mb']:.0f} MB "
         f"({report['memory']['peak_rss_before_torch_mb']:.0f} MB before PyTorch was loaded)"],
    ]
    return Table("Machine", ["", ""], rows)


def _peaks_table(report: dict[str, Any]) -> Table:
    rows = [[p["kernel"], p["dtype"], fmt(p["threads"]), str(p["size"]), fmt(p["p50_ms"], 3), fmt(p["gmacs_per_s"], 1)]
            for p in report["peaks"]]
    return Table("Matrix-multiply peak (this run)", ["kernel", "dtype", "threads", "n", "p50 ms", "GMAC/s"], rows)


def _models_table(report: dict[str, Any]) -> Table:
    rows = []
    for m in report["models"]:
        macs = ", ".join(f"{hw(c['input_shape'][2:])}: {c['total'] / 1e9:.2f}" for c in m["macs"]) or "-"
        rows.append([m.get("model_set", "new"), m["variant"], f"{m['name']} {m['version']}", f"{m['size_bytes'] / 1e6:.2f}",
                     macs, m["sha256"][:12], m["path"]])
    return Table("Models", ["set", "variant", "model", "size MB", "GMAC per inference", "sha256", "file"], rows)


def _pipeline_table(p: dict[str, Any], label: str) -> Table:
    rows = []
    for stage in p["stages"]:
        if stage["available"]:
            rows.append([stage["name"], *_stats_cells(stage["latency_ms"]), pct(stage.get("share")), stage["note"]])
        else:
            rows.append([stage["name"], "not available", "", "", "", "", stage["note"]])
    included = [s["name"] for s in p["stages"] if s["available"]]
    rows.append(["end to end", *_stats_cells(p["end_to_end_ms"]), "", "+".join(included)])
    cells = p["cells_per_field"]
    analysed = [s for s in p["stages"] if s["name"] in ANALYZER_STAGES and s["available"]]
    notes = [
        f"device Analyzer.analyze on the same field in one call: p50 {p['analyze_ms']['p50']:.2f} ms "
        f"(its stages above: {sum(s['latency_ms']['p50'] for s in analysed):.2f} ms summed p50)",
        f"session creation {p['session_create_ms']:.1f} ms, first inference {p['first_inference_ms']:.1f} ms "
        f"({p['runs_on']}, {p['threads']} threads)",
        f"throughput {fmt(p['fields_per_s'])} fields/s; cells per field "
        + ", ".join(f"{k} {v}" for k, v in cells.items())
        + f"; {fmt(p['cells_per_min'], 0)} cells/min",
    ]
    if p.get("interleaved"):
        notes.append("timed in turns with the other headline pipelines on the same field")
    notes.append("share: the stage's mean over the mean end to end (the rest is the hand-over between stages)")
    return Table(f"Pipeline, {label} (ms per field)", ["stage", "p50", "p90", "p99", "mean", "share", "what"], rows,
                 notes)


def _sweep_table(report: dict[str, Any]) -> Table:
    rows = []
    for s in report["sweep"]:
        rows.append([
            s["variant"], s["runs_on"].replace("ExecutionProvider", ""), str(s["threads"]), hw(s["input_hw"]),
            fmt(s["session_create_ms"], 1), fmt(s["first_inference_ms"], 1), *_stats_cells(s["latency_ms"]),
            fmt(s["gmacs_per_s"], 1), pct(s["efficiency"]),
        ])
    header = ["variant", "provider", "thr", "input", "create", "first", "p50", "p90", "p99", "mean", "GMAC/s", "of peak"]
    return Table("Inference sweep (ms)", header, rows, ["of peak: achieved MAC/s over this run's ORT matmul peak "
                                                        "of the same dtype and thread count"])


def _op_profile_table(report: dict[str, Any], top: int = 6) -> Table:
    rows = []
    for profile in report["op_profile"]:
        for op in profile["ops"][:top]:
            rows.append([profile["variant"], op["op"], str(op["nodes"]), fmt(op["ms_per_run"]), pct(op["share"])])
    notes = []
    if report["op_profile"]:
        first = report["op_profile"][0]
        notes.append(f"ONNX Runtime profile, {first['threads']} threads, input {hw(first['input_hw'])}, "
                     f"{first['runs']} runs; top {top} operators per model")
    return Table("Where the time goes (kernel time per operator)", ["variant", "operator", "nodes", "ms/run", "share"],
                 rows, notes)


def _torch_table(report: dict[str, Any]) -> Table:
    t = report["torch"]
    rows = [[str(p["threads"]), hw(p["input_hw"]), *_stats_cells(p["latency_ms"])] for p in t["points"]]
    return Table("PyTorch eager (ms)", ["thr", "input", "p50", "p90", "p99", "mean"], rows, [t["note"]])


def _ratios_table(report: dict[str, Any]) -> Table:
    r = report["ratios"]
    by_threads = r.get("by_threads") or [r]
    header = ["", *[f"{x['basis']['threads']} thr" for x in by_threads]]
    rows = [
        ["int8 / fp32 (ORT p50)", *[fmt(x["int8_over_fp32"], 3) for x in by_threads]],
        ["ORT fp32 / PyTorch eager (p50)", *[fmt(x["ort_fp32_over_torch"], 3) for x in by_threads]],
        ["ORT int8 / PyTorch eager (p50)", *[fmt(x["ort_int8_over_torch"], 3) for x in by_threads]],
        ["fp32 efficiency (of fp32 matmul peak)", *[pct(x["efficiency_fp32"]) for x in by_threads]],
        ["int8 efficiency (of int8 matmul peak)", *[pct(x["efficiency_int8"]) for x in by_threads]],
    ]
    b = r["basis"]
    note = (f"{b['provider']}, input {hw(b['input_hw'])}; headline (summary) at {b['threads']} threads; "
            "below 1 = numerator faster")
    return Table("Ratios (same run)", header, rows, [note])


def to_text(tables: Iterable[Table]) -> str:
    """Fixed-width tables for a terminal."""
    out: list[str] = []
    for table in tables:
        out.append(table.title)
        out.append("=" * len(table.title))
        show_header = any(table.header)
        grid = ([table.header] if show_header else []) + table.rows
        if grid:
            widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
            for n, row in enumerate(grid):
                out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
                if show_header and n == 0:
                    out.append("  ".join("-" * w for w in widths))
        out.extend(table.notes)
        out.append("")
    return "\n".join(out)


def to_markdown(tables: Iterable[Table]) -> str:
    """GitHub-flavoured Markdown tables."""
    out: list[str] = []
    for table in tables:
        out.append(f"### {table.title}\n")
        header = [h or " " for h in table.header]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        for row in table.rows:
            out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        out.append("")
        out.extend(f"{note}\n" for note in table.notes)
    return "\n".join(out)


# --------------------------------------------------------------------------- compare


def _pipeline_rows(report: dict[str, Any]) -> dict[str, float | None]:
    rows: dict[str, float | None] = {}
    for p in report["pipelines"]:
        key = pipeline_label(report, p)
        rows[f"{key} end-to-end p50 ms"] = p["end_to_end_ms"]["p50"]
        rows[f"{key} end-to-end p90 ms"] = p["end_to_end_ms"]["p90"]
        rows[f"{key} end-to-end p95 ms"] = p["end_to_end_ms"].get("p95")
        for stage in p["stages"]:
            if stage["available"]:
                rows[f"{key} {stage['name']} p50 ms"] = stage["latency_ms"]["p50"]
        rows[f"{key} session creation ms"] = p["session_create_ms"]
        rows[f"{key} first inference ms"] = p["first_inference_ms"]
        rows[f"{key} cells/min"] = p["cells_per_min"]
    return rows


def _sweep_rows(report: dict[str, Any]) -> dict[str, float | None]:
    rows: dict[str, float | None] = {}
    for s in report["sweep"]:
        key = f"{s['variant']} {s['runs_on'].replace('ExecutionProvider', '')} {s['threads']}t {hw(s['input_hw'])}"
        rows[f"{key} p50 ms"] = s["latency_ms"]["p50"]
        rows[f"{key} efficiency"] = s["efficiency"]
    return rows


def _other_rows(report: dict[str, Any]) -> dict[str, float | None]:
    rows: dict[str, float | None] = {}
    for name in ("int8_over_fp32", "ort_fp32_over_torch", "ort_int8_over_torch", "efficiency_fp32", "efficiency_int8"):
        rows[f"ratio {name}"] = report["ratios"][name]
    for p in report["peaks"]:
        rows[f"peak {p['kernel']} {fmt(p['threads'])}t GMAC/s"] = p["gmacs_per_s"]
    rows["peak RSS MB, whole bench process"] = report["memory"]["peak_rss_mb"]
    device = (report.get("headline") or {}).get("device_process")
    rows["peak RSS MB, device process"] = device["peak_rss_mb"] if device else None
    return rows


def _field_text(report: dict[str, Any]) -> str:
    frame = report["settings"]["frame"]
    return f"{frame.get('kind', 'image')} {_wxh(frame['frame_hw'])}, {fmt(frame.get('um_per_px'), 4)} um/px"


def _code(report: dict[str, Any]) -> str:
    code = report.get("code") or {}
    return f"{code.get('version', '?')} {code.get('git_commit') or ''}".strip()


def compare_tables(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> list[Table]:
    """Side-by-side figures of two reports, matched by name, with B/A."""
    who = Table(
        "Reports",
        ["", name_a, name_b],
        [
            ["CPU", a["machine"]["cpu_model"], b["machine"]["cpu_model"]],
            ["board", a["machine"].get("board") or "-", b["machine"].get("board") or "-"],
            ["ONNX Runtime", a["machine"]["onnxruntime"]["version"], b["machine"]["onnxruntime"]["version"]],
            ["field", _field_text(a), _field_text(b)],
            ["created", a["created_at"], b["created_at"]],
            ["code", _code(a), _code(b)],
        ],
    )
    tables = [who]
    for title, extract in (("Pipeline", _pipeline_rows), ("Inference sweep", _sweep_rows), ("Ratios, peaks, memory", _other_rows)):
        ra, rb = extract(a), extract(b)
        keys = list(ra) + [k for k in rb if k not in ra]
        rows = [[k, fmt(ra.get(k), 3), fmt(rb.get(k), 3), fmt(ratio(rb.get(k), ra.get(k)), 3)] for k in keys]
        tables.append(Table(title, ["figure", name_a, name_b, f"{name_b}/{name_a}"], rows))
    return tables
