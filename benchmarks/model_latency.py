"""int8 ONNX vs fp32 ONNX vs PyTorch eager: p50 latency and ratios from one run on one input.

    python -m benchmarks.model_latency                    # the shipped models
    python -m benchmarks.model_latency --fp32 a.fp32.onnx --int8 a.int8.onnx --size 512

All three run on the same preprocessed tensor with the same thread count, measured back to back
(warm-up, then N timed runs each; see benchmarks.edge_bench.timing.measure_each for why not
interleaved). PyTorch is optional: without it the
script prints the two ONNX figures and says why the third is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder with segmentation.fp32.onnx and segmentation.int8.onnx [default: the shipped models].")
@click.option("--fp32", type=click.Path(dir_okay=False, path_type=Path), help="The fp32 model (card beside it).")
@click.option("--int8", type=click.Path(dir_okay=False, path_type=Path), help="The int8 model (card beside it).")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path),
              help="Frame the input tensor is made from [default: a seeded synthetic smear].")
@click.option("--size", default="field", show_default=True,
              help="Network input: 'field' (what the frame preprocesses to), N or HxW (multiples of 16).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for all three [default: all usable cores].")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint the models were exported from (weights for PyTorch).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def main(model_dir: Path | None, fp32: Path | None, int8: Path | None, image: Path | None, size: str,
         threads: int | None, runs: int, warmup: int, checkpoint: Path | None, as_json: bool) -> None:
    """Print p50 latency of the int8 ONNX model, the fp32 ONNX model and PyTorch eager, and their ratios."""
    import tempfile

    from benchmarks.edge_bench.cli import _resolutions
    from benchmarks.edge_bench.frames import load_frame
    from benchmarks.edge_bench.models import find_models, open_session
    from benchmarks.edge_bench.run import field_network_hw, usable_cores
    from benchmarks.edge_bench.sweep import model_input
    from benchmarks.edge_bench.timing import measure_each, ratio, summarize
    from benchmarks.edge_bench.torch_baseline import BaselineUnavailable, load_torch_eager
    from runtime.contracts.errors import ModelError

    models = {m.variant: m for m in find_models(model_dir, fp32, int8)}
    missing = [v for v in ("int8", "fp32") if v not in models]
    if missing:
        raise ModelError(f"model-latency needs both variants; missing {', '.join(missing)}")
    threads = threads or usable_cores()
    with tempfile.TemporaryDirectory(prefix="model-latency-") as tmp:
        frame = load_frame(Path(tmp), image, None, kind="synthetic")
    sizes = _resolutions(size) or [None]
    hw = sizes[0] or field_network_hw(frame, models["fp32"])
    tensor = model_input(frame.image, hw, models["fp32"].card)

    calls = {}
    for variant in ("int8", "fp32"):
        _, loaded = open_session(models[variant], "CPUExecutionProvider", threads)
        feeds = {models[variant].input_name: tensor}
        calls[f"{variant} ONNX"] = (lambda s=loaded.session, f=feeds: s.run(None, f))
    torch_note = None
    try:
        eager = load_torch_eager(models["fp32"].path, models["fp32"].card, checkpoint)
        eager.set_threads(threads)
        calls["PyTorch eager"] = lambda: eager.forward(tensor)
        torch_note = f"PyTorch {eager.version}, weights: {eager.weights}"
    except BaselineUnavailable as exc:
        torch_note = f"PyTorch eager not measured: {exc}"

    stats = {name: summarize(v) for name, v in measure_each(calls, warmup=warmup, runs=runs).items()}
    p50 = {name: s.p50 for name, s in stats.items()}
    eager_p50 = p50.get("PyTorch eager")
    ratios = {
        "int8/fp32": ratio(p50["int8 ONNX"], p50["fp32 ONNX"]),
        "int8/PyTorch": ratio(p50["int8 ONNX"], eager_p50),
        "fp32/PyTorch": ratio(p50["fp32 ONNX"], eager_p50),
    }
    if as_json:
        click.echo(json.dumps({
            "input_shape": list(tensor.shape), "threads": threads, "runs": runs, "warmup": warmup,
            "frame": frame.source, "latency_ms": {k: s.to_dict() for k, s in stats.items()},
            "p50_ratios": ratios, "torch": torch_note,
        }, indent=2))
        return
    click.echo(f"input 1x3x{hw[0]}x{hw[1]} from {frame.source}; {threads} threads; "
               f"{runs} runs each after {warmup} warm-up")
    for name, s in stats.items():
        click.echo(f"  {name:<14} p50 {s.p50:9.2f} ms   (p90 {s.p90:.2f}, mean {s.mean:.2f})")
    if "PyTorch eager" not in stats:
        click.echo(f"  {'PyTorch eager':<14} -")
    click.echo("p50 ratios (below 1: the first is faster)")
    for name, value in ratios.items():
        click.echo(f"  {name:<14} {'-' if value is None else f'{value:.3f}'}"
                   + ("" if value is None else f"   ({1 / value:.2f}x speed-up)"))
    click.echo(torch_note)


def run() -> None:
    """Entry point with the project's one-line errors."""
    from runtime.contracts.errors import SmearscopeError

    try:
        main.main(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)
    except SmearscopeError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
