"""The device pipeline of an older checkout against this one, end to end on the same camera field.

    git worktree add /tmp/old466 466a173       # the tree before the lite network and grid counting
    python -m benchmarks.old_vs_new --old-tree /tmp/old466 --out old-vs-new/

The field is the camera field edge-bench uses (the first four bundled frames tiled 2x2, 1280x960,
at their µm/px), written once as a lossless PNG so both trees read the same pixels through
`--image`. Each round runs the old tree's own `edge-bench` on it with the calibration and without,
then this tree's `edge-bench` with `--models NEW --baseline-models CONTEXT` (by default the lite
network, with the shipped version-3 models beside it in the same run for context), all with the
same threads, runs and warm-up and no PyTorch. Every tree runs its int8 model only (the deployed
variant; a folder of links to it, so no fp32 pipeline is timed on either side).
Old and new take turns round by round (old, new, old, new ...), so a load that changes during the
comparison falls on both; the load average is recorded around every run and printed.

Figures are the end-to-end p50/p95 (capture to published) of each run's int8 pipelines, and
old/new as p50 over p50, per round and over the medians of all rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parents[1]
#: Runs a tree's edge-bench console script with that tree first on the path.
ENTRY = "from smearscope.cli.edge_bench import main; main()"
MODES = ("calibrated", "uncalibrated")
#: The matmul peak both trees measure besides the pipelines: small, it is not compared here.
PEAK_SIZE = 256


@dataclass(frozen=True)
class Settings:
    """What every edge-bench run of the comparison shares."""

    field: Path
    um_per_px: float
    threads: int
    runs: int
    warmup: int
    mqtt: str


def write_field(target: Path) -> float:
    """The camera field as a PNG (no JPEG loss: both trees decode the same pixels); its µm/px."""
    import cv2

    from benchmarks.edge_bench.frames import tile_bundled_frames
    from runtime.capture.bundled import bundled_um_per_px

    grid, _ = tile_bundled_frames()
    if not cv2.imwrite(str(target), grid):
        raise click.FileError(str(target), hint="cannot write the field")
    return bundled_um_per_px()


def int8_only(models: Path, target: Path) -> Path:
    """A folder holding only `models`' int8 model and its card (links): edge-bench runs every
    variant it finds, and the fp32 pipeline is not what a device runs, so neither tree times it."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("segmentation.int8.onnx", "segmentation.int8.json"):
        link = target / name
        if link.is_symlink() or link.exists():
            link.unlink()
        if not (models / name).is_file():
            raise click.FileError(str(models / name), hint="no int8 model and card in this folder")
        link.symlink_to((models / name).resolve())
    return target


def edge_bench(tree: Path, args: list[str], report: Path) -> dict[str, Any]:
    """One edge-bench run of `tree` (its own code first on the path); its report and the load
    average before and after it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]))
    before, start = os.getloadavg(), time.monotonic()
    done = subprocess.run([sys.executable, "-c", ENTRY, *args, "-o", str(report)], cwd=tree, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise click.ClickException(f"edge-bench in {tree} failed (exit {done.returncode}):\n{tail}")
    return {"report": str(report), "wall_s": round(time.monotonic() - start, 1),
            "load_before": [round(v, 2) for v in before], "load_after": [round(v, 2) for v in os.getloadavg()],
            "data": json.loads(report.read_text())}


def common_args(s: Settings, calibrated: bool) -> list[str]:
    calibration = ["--um-per-px", str(s.um_per_px)] if calibrated else []
    return ["--image", str(s.field), *calibration, "--threads", str(s.threads), "--runs", str(s.runs),
            "--warmup", str(s.warmup), "--mqtt", s.mqtt, "--no-torch", "--peak-size", str(PEAK_SIZE)]


#: edge-bench/1 stores p90 and p99, not p95. Its percentiles interpolate linearly between closest
#: ranks, so with at most this many runs p90, p95 and p99 lie between the same two (the two
#: slowest) and p95 is exactly p90 + 5/9 of (p99 - p90).
P95_FROM_P90_P99_MAX_RUNS = 11


def old_figures(report: dict[str, Any]) -> dict[str, float | None]:
    """End-to-end p50/p95 of the old run's int8 pipeline (its deployed variant)."""
    pipeline = next(p for p in report["pipelines"] if p["variant"] == "int8")
    e2e = pipeline["end_to_end_ms"]
    p95 = e2e.get("p95")
    if p95 is None and e2e["n"] <= P95_FROM_P90_P99_MAX_RUNS:
        p95 = e2e["p90"] + (e2e["p99"] - e2e["p90"]) * 5.0 / 9.0
    return {"p50_ms": e2e["p50"], "p95_ms": p95}


def new_figures(report: dict[str, Any], model_set: str, mode: str) -> dict[str, float | None]:
    figures = report["headline"][model_set][mode]
    return {"p50_ms": figures["p50_ms"], "p95_ms": figures["p95_ms"]}


def run_rounds(old_tree: Path, old_models: Path, new_models: Path, context_models: Path, s: Settings, rounds: int,
               out: Path) -> list[dict[str, Any]]:
    """old calibrated, old uncalibrated, new (both modes, new and context sets), round by round."""
    runs = []
    for r in range(1, rounds + 1):
        for mode in MODES:
            args = [*common_args(s, mode == "calibrated"), "--model-dir", str(old_models)]
            run = edge_bench(old_tree, args, out / f"old-{mode}-{r}.json")
            runs.append({"round": r, "tree": "old", "mode": mode, **run})
            click.echo(line(runs[-1]), err=True)
        args = [*common_args(s, True), "--models", str(new_models), "--baseline-models", str(context_models)]
        run = edge_bench(ROOT, args, out / f"new-{r}.json")
        runs.append({"round": r, "tree": "new", "mode": "both", **run})
        click.echo(line(runs[-1]), err=True)
    return runs


def figures_of(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """'old calibrated' / 'new calibrated' / 'context calibrated' ... -> p50/p95 of that run."""
    data = run["data"]
    if run["tree"] == "old":
        return {f"old {run['mode']}": old_figures(data)}
    return {f"{name} {mode}": new_figures(data, model_set, mode)
            for name, model_set in (("new", "new"), ("context", "baseline")) for mode in MODES}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def line(run: dict[str, Any]) -> str:
    cells = "; ".join(f"{k} {_ms(v['p50_ms'])} / {_ms(v['p95_ms'])} ms" for k, v in figures_of(run).items())
    load = " ".join(f"{v:.2f}" for v in run["load_before"]) + " -> " + " ".join(f"{v:.2f}" for v in run["load_after"])
    return f"round {run['round']} {run['tree']:<3} ({run['wall_s']:.0f} s, load {load}): {cells}"


def _median(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else statistics.median(values)  # type: ignore[type-var]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per round old/new (and old/context) p50 ratios, and the same over the medians of all rounds."""
    by_round: dict[int, dict[str, dict[str, float]]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {}).update(figures_of(run))
    ratios = {}
    for r, figs in by_round.items():
        ratios[r] = {f"old/{name} {mode} p50": round(figs[f"old {mode}"]["p50_ms"] / figs[f"{name} {mode}"]["p50_ms"], 2)
                     for name in ("new", "context") for mode in MODES}
    keys = next(iter(by_round.values())).keys()
    medians = {k: {q: _median([f[k][q] for f in by_round.values()]) for q in ("p50_ms", "p95_ms")} for k in keys}
    overall = {f"old/{name} {mode} p50": round(medians[f"old {mode}"]["p50_ms"] / medians[f"{name} {mode}"]["p50_ms"], 2)
               for name in ("new", "context") for mode in MODES}
    return {"per_round": ratios, "medians_ms": medians, "overall": overall}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--old-tree", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A checkout of the old tree (e.g. `git worktree add /tmp/old466 466a173`); its models/ is used.")
@click.option("--models", "new_models", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=ROOT / "models", show_default=True, help="This tree's model set to compare.")
@click.option("--context-models", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=ROOT / "models" / "v3", show_default=True,
              help="A second set of this tree, run in the same new runs for context (--baseline-models).")
@click.option("--rounds", type=click.IntRange(min=2), default=2, show_default=True, help="Turns each tree takes.")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help=f"Timed runs per pipeline (the old report's p95 needs at most {P95_FROM_P90_P99_MAX_RUNS}).")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="Intra-op threads, both trees.")
@click.option("--mqtt", default="auto", show_default=True, help="Publish stage broker for both: auto, none or HOST:PORT.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("old-vs-new"), show_default=True,
              help="Folder for the field PNG, every run's report and summary.json.")
def main(old_tree: Path, new_models: Path, context_models: Path, rounds: int, runs: int, warmup: int, threads: int,
         mqtt: str, out: Path) -> None:
    """Old tree against this one on the same camera field: end-to-end p50/p95 and old/new."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    field = out / "camera-field.png"
    settings = Settings(field, write_field(field), threads, runs, warmup, mqtt)
    sets = Path(tempfile.mkdtemp(prefix="old-vs-new-models-"))  # links to the two int8 models: scratch, not results
    done = run_rounds(old_tree.resolve(), int8_only(old_tree.resolve() / "models", sets / "old"),
                      int8_only(new_models.resolve(), sets / "new"), context_models.resolve(), settings, rounds, out)
    result = summarize(done)
    summary = {
        "field": str(field), "um_per_px": settings.um_per_px, "threads": threads, "runs": runs, "warmup": warmup,
        "old_tree": str(old_tree.resolve()), "old_commit": done[0]["data"].get("code", {}).get("git_commit"),
        "new_commit": done[-1]["data"]["code"]["git_commit"], "new_models": str(new_models),
        "context_models": str(context_models),
        "runs_done": [{k: v for k, v in run.items() if k != "data"} | {"figures": figures_of(run)} for run in done],
        **result,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    click.echo(f"old {summary['old_commit']} ({old_tree}/models) vs new {summary['new_commit']} ({new_models}; "
               f"context {context_models}); camera field 1280x960 PNG, {settings.um_per_px} um/px, {threads} threads, "
               f"{runs} runs after {warmup} warm-up")
    for run in done:
        click.echo(line(run))
    for r, ratios in result["per_round"].items():
        click.echo(f"round {r} " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    click.echo("medians of the rounds: " + ", ".join(f"{k} {_ms(v['p50_ms'])} / {_ms(v['p95_ms'])} ms"
                                                      for k, v in result["medians_ms"].items()))
    click.echo("over the medians: " + ", ".join(f"{k} {v:.2f}" for k, v in result["overall"].items()))
    click.echo(f"reports and summary: {out}")


if __name__ == "__main__":
    main()
