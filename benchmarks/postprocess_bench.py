"""Post-processing time on a calibrated 1280x960 field: this tree, and optionally another, in one run.

    python -m benchmarks.postprocess_bench                          # this tree only
    git worktree add /tmp/before <ref>
    python -m benchmarks.postprocess_bench --baseline /tmp/before   # before vs after, with the ratio

The field is four bundled frames tiled 2x2 at the bundled frames' µm/px (runtime/capture/frames),
run once through the model (the calibrated frame needs one pass, flip-averaged as the card says).
That final pass is stored, and each tree's post-processing (benchmarks/postprocess_worker.py: what
Analyzer.analyze times as 'postprocess', plus area %) runs on it in its own process, which also
reports a digest of its cell records, labels and area %, so the trees' results are checked for
identity. The trees take turns, a block of runs each, so a change in the machine's load falls on both; the load
average is printed beside the figures, and both wall and CPU time (CPU time counts this process
only, so it moves less when other work shares the cores).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np

def tiled_field() -> tuple[np.ndarray, float]:
    """edge-bench's camera field (bundled frames tiled to 1280x960) and the frames' µm/px."""
    from benchmarks.edge_bench.frames import tile_bundled_frames
    from runtime.capture.bundled import bundled_um_per_px

    return tile_bundled_frames()[0], bundled_um_per_px()


def _set_fields(plan: Any) -> dict[str, Any]:
    """The plan's fields that differ from their defaults: an older tree, which may not know a newer
    field, reads the same plan as long as that field is at its default."""
    defaults = type(plan)().to_dict()
    return {key: value for key, value in plan.to_dict().items() if defaults.get(key) != value}


def store_final_pass(model_path: Path | None, target: Path) -> dict[str, Any]:
    """Run the model on the tiled field (the device's path: decide_scale + search_scale) and store
    the final pass's outputs, geometry, plan and calibration in `target`."""
    from runtime.analysis.scale_search import search_scale
    from runtime.inference.model import SegmentationModel
    from runtime.inference.session import SessionOptions

    field, um_per_px = tiled_field()
    model = SegmentationModel.load(model_path, SessionOptions(warmup=False))
    first = model.predict(model.prepare(field, model.decide_scale(field, um_per_px)))
    final = search_scale(model, field, first)[-1]
    geometry = final.prepared.geometry
    target.write_bytes(pickle.dumps({
        "logits": final.logits, "heat": final.heat, "runs": final.runs, "geometry": geometry,
        "decision": final.decision, "plan": _set_fields(model.plan), "um_per_px": um_per_px}))
    return {"frame_hw": list(geometry.frame_hw), "grid_hw": list(geometry.resized_hw), "scale": geometry.scale}


class Worker:
    """One tree's worker process (its own `runtime` on PYTHONPATH)."""

    def __init__(self, tree: Path, pass_file: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        script = Path(__file__).with_name("postprocess_worker.py")
        self.process = subprocess.Popen([sys.executable, str(script), str(pass_file)], env=env, cwd=tree,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self._answer()
        self.counts, self.digest = ready["counts"], ready.get("digest")
        self.timings: dict[str, dict[str, list[float]]] = {}

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the post-processing worker stopped (exit {self.process.wait()})")
        return json.loads(line)

    def run(self, n: int) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{n}\n")
        self.process.stdin.flush()
        for stage, clocks in self._answer().items():
            for clock, values in clocks.items():
                self.timings.setdefault(stage, {}).setdefault(clock, []).extend(values)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def summary(worker: Worker) -> dict[str, dict[str, float]]:
    """p50 and min per stage and clock (ms)."""
    from benchmarks.edge_bench.timing import summarize

    return {f"{stage}_{clock}": {"p50": round((s := summarize(values)).p50, 3), "min": round(s.min, 3)}
            for stage, clocks in worker.timings.items() for clock, values in clocks.items()}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--baseline", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Another checkout (e.g. a git worktree of the commit before) to time against this one.")
@click.option("--model", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Segmentation model [default: the shipped int8 model].")
@click.option("--rounds", type=click.IntRange(min=1), default=6, show_default=True,
              help="Turns each tree takes.")
@click.option("--runs", type=click.IntRange(min=1), default=10, show_default=True, help="Timed runs per turn.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def main(baseline: Path | None, model: Path | None, rounds: int, runs: int, as_json: bool) -> None:
    """Time the post-processing of a calibrated 1280x960 field (and of --baseline's, with the ratio)."""
    from benchmarks.edge_bench.timing import ratio

    here = Path(__file__).resolve().parents[1]
    trees = {"this": here, **({"baseline": baseline.resolve()} if baseline else {})}
    with tempfile.TemporaryDirectory(prefix="postprocess-bench-") as tmp:
        pass_file = Path(tmp) / "final_pass.pkl"
        report: dict[str, Any] = {"field": store_final_pass(model, pass_file), "load_before": os.getloadavg()}
        workers = {name: Worker(tree, pass_file) for name, tree in trees.items()}
        try:
            for _ in range(rounds):
                for worker in workers.values():
                    worker.run(runs)
        finally:
            for worker in workers.values():
                worker.close()
    report["load_after"] = os.getloadavg()
    report["trees"] = {name: {"path": str(trees[name]), "counts": w.counts, "digest": w.digest, **summary(w)}
                       for name, w in workers.items()}
    if baseline:
        this, base = report["trees"]["this"], report["trees"]["baseline"]
        report["identical_results"] = this["digest"] is not None and this["digest"] == base["digest"]
        report["speed-up"] = {key: round(ratio(base[key]["p50"], this[key]["p50"]) or 0.0, 1)
                              for key in this if key.endswith(("_wall", "_cpu"))}
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    field = report["field"]
    click.echo(f"field {field['frame_hw'][1]}x{field['frame_hw'][0]}, network grid {field['grid_hw'][1]}x"
               f"{field['grid_hw'][0]} (scale {field['scale']:.4f}); {rounds} turns x {runs} runs per tree")
    for name, tree in report["trees"].items():
        click.echo(f"{name:<9} {tree['path']}  counts {tree['counts']}")
        for key in ("postprocess_wall", "postprocess_cpu", "read_pass_wall", "read_pass_cpu"):
            speed = f"   speed-up x{report['speed-up'][key]}" if name == "this" and baseline else ""
            click.echo(f"  {key:<17} p50 {tree[key]['p50']:9.2f} ms   min {tree[key]['min']:9.2f} ms{speed}")
    if baseline:
        click.echo("cell records, labels and area %: " + ("identical" if report["identical_results"] else "DIFFERENT"))
    click.echo("load average (1/5/15 min): before " + " ".join(f"{v:.2f}" for v in report["load_before"])
               + ", after " + " ".join(f"{v:.2f}" for v in report["load_after"]))


if __name__ == "__main__":
    main()
