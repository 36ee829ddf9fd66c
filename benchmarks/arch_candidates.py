"""Network candidates measured before training them: int8 time, MACs and share of the matmul peak.

    python -m benchmarks.arch_candidates                    # every candidate below, camera field, all cores
    python -m benchmarks.arch_candidates --only lite-b32-d3 --only stem4-b128-d2 --json

The camera-field issue asks for a network whose int8 MAC/s reaches 60 % of the machine's int8
matrix-multiply peak. How fast an int8 convolution runs depends on its shape, not on its weights,
so a candidate's time can be measured untrained: each one is built with random weights, exported,
simplified and quantized exactly as the shipped models are (`export.onnx_export`,
`export.quantize.quantize_int8`, calibrated on the field itself), and run with ONNX Runtime on the
camera field's network input (edge-bench's default field at its calibration, padded to the
candidate's stride). The shipped model file runs beside them, so the untrained copy of its
architecture can be checked against it. The matmul peak is measured in the same run
(`benchmarks.edge_bench.peak`), the MACs counted from the graph ONNX Runtime runs
(`benchmarks.edge_bench.macs`), and the load average is printed before and after.

What this cannot say is how accurate a candidate would be once trained: that takes training.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from benchmarks.edge_bench.macs import count_macs
from benchmarks.edge_bench.peak import ort_matmul_peak
from benchmarks.edge_bench.timing import measure
from export.conv_path import gemm_weights_file

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "segmentation.int8.onnx"


@dataclass(frozen=True)
class Candidate:
    """One network to measure: a registered model name and its arguments."""

    name: str
    kwargs: dict[str, Any]
    why: str


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("lite-b32-d3", {"base_width": 32, "depth": 3},
              "the shipped architecture (lite version 8), untrained"),
    Candidate("lite-b48-d3", {"base_width": 48, "depth": 3}, "wider at every level"),
    Candidate("lite-b64-d3", {"base_width": 64, "depth": 3}, "twice as wide at every level"),
    Candidate("stem4-b64-d3", {"base_width": 64, "depth": 3, "stem_stride": 4},
              "a quarter-scale top level, 64 to 512 channels"),
    Candidate("stem4-b96-d2", {"base_width": 96, "depth": 2, "stem_stride": 4},
              "a quarter-scale top level, 96 to 384 channels"),
    Candidate("stem4-b128-d2", {"base_width": 128, "depth": 2, "stem_stride": 4},
              "a quarter-scale top level, 128 to 512 channels"),
)


@dataclass(frozen=True)
class Measured:
    """One model's int8 time on the field's input and what it does per second."""

    name: str
    why: str
    input_hw: tuple[int, int]
    gmac: float
    p50_ms: float
    p95_ms: float
    gmacs_per_s: float
    share_of_peak: float | None = None


def field_tensor(stride: int) -> np.ndarray:
    """edge-bench's camera field preprocessed as the shipped card says, padded to `stride`."""
    from benchmarks.edge_bench.frames import tile_bundled_frames
    from runtime.capture.bundled import bundled_um_per_px
    from runtime.inference.preprocess import preprocess

    return preprocess(tile_bundled_frames()[0], shipped_params(stride), um_per_px=bundled_um_per_px()).tensor


def shipped_params(stride: int) -> Any:
    """The shipped card's preprocessing, padding to `stride` at least."""
    from runtime.contracts.modelcard import load_card

    params = load_card(SHIPPED_MODEL).preprocess
    return params.replace(stride=max(params.stride, stride))


def build_int8(candidate: Candidate, folder: Path) -> tuple[Path, np.ndarray]:
    """`candidate` with random weights (seed 0), exported, simplified and quantized like the
    shipped models, calibrated on the camera field at its stride: (int8 file, that input)."""
    import torch

    from export.onnx_export import export_segmentation
    from export.quantize import PreprocessedFrames, quantize_int8
    from training.unet import build_model

    torch.manual_seed(0)
    model = build_model("lite_unet", centre_head=True, **candidate.kwargs).eval()
    _trained_like_batch_norms(model)
    fp32 = export_segmentation(model, shipped_params(model.stride), folder / f"{candidate.name}.fp32.onnx")
    int8 = folder / f"{candidate.name}.int8.onnx"
    tensor = field_tensor(model.stride)
    quantize_int8(fp32, int8, PreprocessedFrames.from_tensors([tensor]))
    return int8, tensor


def _trained_like_batch_norms(model: Any) -> None:
    """Give every batch norm random statistics and affine terms, as training leaves them. Fresh
    ones fold into identical zero biases, which the exporter shares between convolutions, and a
    shared bias keeps `export.layout` from rewriting its convolution's up-sampling: the graph would
    not be the one a trained model of the same shape runs."""
    import torch

    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(n, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))


def time_int8(path: Path, tensor: np.ndarray, threads: int, warmup: int, runs: int) -> tuple[float, float, float]:
    """(GMAC, p50 ms, p95 ms) of one inference of `path` on `tensor`."""
    from runtime.inference.session import SessionOptions, create_session

    session = create_session(path, SessionOptions(providers=("cpu",), intra_op_threads=threads, warmup=False))
    name = session.get_inputs()[0].name
    stats = measure(lambda: session.run(None, {name: tensor}), warmup=warmup, runs=runs)
    macs = count_macs(path, tensor.shape[2], tensor.shape[3]).total
    return macs / 1e9, stats.p50, stats.p95


def _measured(name: str, why: str, path: Path, tensor: np.ndarray, threads: int, warmup: int, runs: int) -> Measured:
    gmac, p50, p95 = time_int8(path, tensor, threads, warmup, runs)
    return Measured(name, why, (tensor.shape[2], tensor.shape[3]), gmac, p50, p95, gmac / (p50 / 1000.0))


def run(candidates: list[Candidate], threads: int, warmup: int, runs: int, gemm: bool = False) -> dict[str, Any]:
    """Every candidate and the shipped model timed (with `gemm`, each also with its weights on the
    GEMM path), then the matmul peak; shares of it filled in."""
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="smearscope-candidates-") as tmp:
        models = [("shipped (trained)", f"{SHIPPED_MODEL.name} as shipped", SHIPPED_MODEL, field_tensor(16))]
        for candidate in candidates:
            click.echo(f"{candidate.name}: export, quantize", err=True)
            models.append((candidate.name, candidate.why, *build_int8(candidate, Path(tmp))))
        for name, why, path, tensor in models:
            click.echo(f"{name}: time", err=True)
            results.append(_measured(name, why, path, tensor, threads, warmup, runs))
            if gemm:
                shifted = Path(tmp) / f"{path.stem}.gemm.onnx"
                count = gemm_weights_file(path, shifted)
                results.append(_measured(f"{name}, GEMM", f"{count} weight tensors on the im2col + GEMM path", shifted,
                                         tensor, threads, warmup, runs))
    peak = ort_matmul_peak("int8", threads)
    results = [dataclasses.replace(r, share_of_peak=r.gmacs_per_s / peak.gmacs_per_s) for r in results]
    return {"threads": threads, "peak": peak.to_dict(), "load_average": {"before": load_before, "after": os.getloadavg()},
            "models": [dataclasses.asdict(r) for r in results]}


def render(report: dict[str, Any]) -> str:
    peak = report["peak"]
    lines = [f"int8, {report['threads']} threads, camera field; matmul peak {peak['gmacs_per_s']:.0f} GMAC/s "
             f"({peak['kernel']}, {peak['size']}^3)",
             f"{'model':26s} {'input':>9s} {'GMAC':>6s} {'p50 ms':>7s} {'p95 ms':>7s} {'GMAC/s':>7s} {'of peak':>8s}  what"]
    for m in report["models"]:
        h, w = m["input_hw"]
        lines.append(f"{m['name']:26s} {h:>4d}x{w:<4d} {m['gmac']:6.2f} {m['p50_ms']:7.2f} {m['p95_ms']:7.2f} "
                     f"{m['gmacs_per_s']:7.0f} {100 * m['share_of_peak']:7.1f}%  {m['why']}")
    before, after = report["load_average"]["before"], report["load_average"]["after"]
    lines.append("load average (1/5/15 min): before " + " ".join(f"{x:.2f}" for x in before)
                 + ", after " + " ".join(f"{x:.2f}" for x in after))
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--only", "only", multiple=True, type=click.Choice([c.name for c in CANDIDATES]),
              help="Measure these candidates only (repeatable) [default: all].")
@click.option("--threads", type=click.IntRange(min=1), default=lambda: len(os.sched_getaffinity(0)),
              show_default="all usable cores", help="ONNX Runtime intra-op threads, for the models and the peak.")
@click.option("--runs", type=click.IntRange(min=1), default=30, show_default=True, help="Timed runs per model.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed runs first.")
@click.option("--gemm/--no-gemm", default=True, show_default=True,
              help="Also time each model with its convolutions' weights moved to the GEMM path (same products).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def main(only: tuple[str, ...], threads: int, runs: int, warmup: int, gemm: bool, as_json: bool) -> None:
    """Time network candidates (untrained, int8) on the camera field against this machine's int8 matmul peak."""
    chosen = [c for c in CANDIDATES if not only or c.name in only]
    report = run(chosen, threads, warmup, runs, gemm)
    click.echo(json.dumps(report, indent=1) if as_json else render(report))


if __name__ == "__main__":
    sys.exit(main())
