"""The `edge-bench` command: run the benchmark, or compare two saved reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _int_list(value: str | None, what: str) -> list[int]:
    if not value:
        return []
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=what) from None
    if any(v < 1 for v in items):
        raise click.BadParameter("every value must be at least 1", param_hint=what)
    return items


def _resolutions(value: str | None) -> list[tuple[int, int] | None] | None:
    """'field,512,384x640' -> [None, (512, 512), (384, 640)]."""
    if not value:
        return None
    sizes: list[tuple[int, int] | None] = []
    for item in value.split(","):
        item = item.strip().lower()
        if item == "field":
            sizes.append(None)
            continue
        h, _, w = item.partition("x")
        if not h.isdigit() or (w and not w.isdigit()):
            raise click.BadParameter(f"expected 'field', N or HxW, got {item!r}", param_hint="--resolutions")
        size = (int(h), int(w or h))
        if min(size) < 16 or size[0] % 16 or size[1] % 16:
            raise click.BadParameter(f"{item}: sides must be multiples of 16 (the network stride), at least 16",
                                     param_hint="--resolutions")
        sizes.append(size)
    return sizes


@click.group(invoke_without_command=True, context_settings=CONTEXT)
@click.option("--models", "--model-dir", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder with segmentation.fp32.onnx / segmentation.int8.onnx and their cards "
                   "[default: the shipped models folder, or $SMEARSCOPE_MODELS].")
@click.option("--baseline-models", "baseline_dir", type=click.Path(file_okay=False, path_type=Path),
              help="A second model set (e.g. models/v3) to compare with: its model of the headline variant "
                   "runs on the same field in turns with the new one; prints new/baseline p50 and p95.")
@click.option("--fp32", "fp32", type=click.Path(dir_okay=False, path_type=Path), help="An fp32 model (its card beside it).")
@click.option("--int8", "int8", type=click.Path(dir_okay=False, path_type=Path), help="An int8 model (its card beside it).")
@click.option("--field", "field_kind", type=click.Choice(["camera", "synthetic"]),
              help="The built-in field: camera = a real 1280x960 field tiled 2x2 from bundled frames at their "
                   "0.0725 um/px; synthetic = a seeded 640x480 smear at 0.125 um/px [default: camera].")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path),
              help="Analyse this field instead of a built-in one.")
@click.option("--um-per-px", type=float,
              help="Calibration of the field (replaces a built-in field's own; without it, --image runs "
                   "uncalibrated only).")
@click.option("--runs", type=click.IntRange(min=1), help="Timed runs per measurement [default 15; --quick 3].")
@click.option("--warmup", type=click.IntRange(min=0), help="Untimed runs first [default 2; --quick 1].")
@click.option("--threads", help="Comma-separated intra-op thread counts to sweep [default: 1 and all usable cores].")
@click.option("--provider", "providers", multiple=True,
              help="Execution provider(s) to sweep, e.g. CPUExecutionProvider [default: every one present].")
@click.option("--resolutions",
              help="Network input sizes: 'field' (what the field preprocesses to), N or HxW, comma-separated "
                   "[default: field].")
@click.option("--peak-size", type=click.IntRange(min=64), help="Matrix side of the peak benchmark [default 1024, also with --quick: a smaller matrix never reaches the peak, and a model then shows over 100 % of it]. Its graphs are stored for the usual sides (benchmarks/edge_bench/assets); another side needs the onnx package to build one.")
@click.option("--torch/--no-torch", "use_torch", default=True, show_default=True,
              help="Measure the PyTorch eager baseline at the largest thread count (needs torch; "
                   "reported as not available without it).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="PyTorch checkpoint the model was exported from (weights for the eager baseline).")
@click.option("--mqtt", default="auto", show_default=True,
              help="Broker for the publish stage: auto (a private Mosquitto when installed), none, or HOST:PORT.")
@click.option("--quick", is_flag=True, help="A few runs, one thread count, the field size only: a smoke test in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema: report.schema.json).")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the report as Markdown tables.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Also save the JSON report here (for `edge-bench compare`).")
@click.pass_context
def cli(ctx: click.Context, **kw: object) -> None:
    """Benchmark the smearscope device pipeline on this machine.

    Times every stage of one camera-size field (capture/decode, quality gate, preprocessing,
    segmentation, post-processing, diagnosis, outbox write, MQTT publish) over N runs after a
    warm-up, with and without the field's calibration; sweeps fp32 vs int8, thread counts,
    execution providers and input sizes; measures the machine's own matrix-multiply peak; and
    prints int8/fp32, ONNX Runtime/PyTorch and achieved/peak ratios, all from this one run.
    With --baseline-models, a second model set runs on the same field in turns with the first.
    Progress goes to stderr; the report to stdout.

    \b
    edge-bench                                        # the full default run
    edge-bench --quick --json                         # a smoke test, JSON report
    edge-bench --baseline-models models/v3            # shipped (lite) vs version 3, one run
    edge-bench -o pi5.json                            # save for `edge-bench compare pi5.json jetson.json`
    """
    if ctx.invoked_subcommand is not None:
        return
    _run(ctx, **kw)


def _run(ctx: click.Context, *, as_json: bool, as_markdown: bool, output: Path | None, quick: bool, **kw: object) -> None:
    from benchmarks.edge_bench.render import report_tables, to_markdown, to_text
    from benchmarks.edge_bench.run import BenchOptions, run_benchmark

    if as_json and as_markdown:
        raise click.UsageError("choose one of --json and --markdown")
    if kw["image"] is not None and kw["field_kind"] is not None:
        raise click.UsageError("choose one of --field and --image")
    resolutions = _resolutions(kw["resolutions"])  # type: ignore[arg-type]
    options = BenchOptions(
        model_dir=kw["model_dir"],  # type: ignore[arg-type]
        fp32=kw["fp32"],  # type: ignore[arg-type]
        int8=kw["int8"],  # type: ignore[arg-type]
        image=kw["image"],  # type: ignore[arg-type]
        um_per_px=kw["um_per_px"],  # type: ignore[arg-type]
        field_kind=str(kw["field_kind"] or "camera"),
        baseline_dir=kw["baseline_dir"],  # type: ignore[arg-type]
        runs=kw["runs"] or (3 if quick else 15),  # type: ignore[arg-type]
        warmup=kw["warmup"] if kw["warmup"] is not None else (1 if quick else 2),  # type: ignore[arg-type]
        threads=_int_list(kw["threads"], "--threads"),  # type: ignore[arg-type]
        providers=list(kw["providers"]),  # type: ignore[arg-type]
        resolutions=resolutions or [None],
        peak_size=kw["peak_size"] or 1024,  # type: ignore[arg-type]
        torch=bool(kw["use_torch"]),
        checkpoint=kw["checkpoint"],  # type: ignore[arg-type]
        mqtt=str(kw["mqtt"]),
        quick=quick,
        command=["edge-bench", *sys.argv[1:]] if sys.argv and "edge-bench" in sys.argv[0] else ["edge-bench"],
    )
    if quick and not kw["threads"]:
        from benchmarks.edge_bench.run import usable_cores

        options.threads = [usable_cores()]

    def progress(label: str) -> None:
        click.echo(label, err=True)

    report = run_benchmark(options, progress)
    if output is not None:
        try:
            output.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise click.FileError(str(output), hint=exc.strerror) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif as_markdown:
        click.echo(to_markdown(report_tables(report)))
    else:
        click.echo(to_text(report_tables(report)))


@cli.command(context_settings=CONTEXT)
@click.argument("report_a", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("report_b", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--markdown", "as_markdown", is_flag=True, help="Markdown tables instead of text.")
def compare(report_a: Path, report_b: Path, as_markdown: bool) -> None:
    """Compare two saved reports (a Pi against a Jetson, before against after).

    Figures are matched by name; the last column is B/A (for times, below 1 means B is faster).
    """
    from benchmarks.edge_bench.render import compare_tables, to_markdown, to_text
    from benchmarks.edge_bench.report import load_report

    a, b = load_report(report_a), load_report(report_b)
    tables = compare_tables(a, b, report_a.stem, report_b.stem)
    click.echo(to_markdown(tables) if as_markdown else to_text(tables))
