"""ONNX Runtime sessions: providers from config with fallback, thread count, hash check, warm-up.

The one place that creates an `onnxruntime.InferenceSession`, used by the device, by export
validation and by the benchmarks, so every path runs a model the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from runtime.contracts.errors import ModelError
from runtime.contracts.modelcard import ModelCard, load_card

log = logging.getLogger(__name__)

PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
DEFAULT_PROVIDERS: tuple[str, ...] = ("tensorrt", "cuda", "cpu")


def resolve_providers(requested: Sequence[str] = DEFAULT_PROVIDERS) -> list[str]:
    """Map short names to ORT provider names, keep those this build has, CPU always last."""
    available = set(ort.get_available_providers())
    chosen: list[str] = []
    for name in requested:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in PROVIDER_ALIASES.values() and full not in available:
            raise ModelError(f"unknown execution provider {name!r}; known: {', '.join(PROVIDER_ALIASES)}")
        if full in available and full not in chosen:
            chosen.append(full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


@dataclass
class SessionOptions:
    """How to run a model: providers in order of preference and CPU threads (0 = ORT default)."""

    providers: Sequence[str] = DEFAULT_PROVIDERS
    intra_op_threads: int = 0
    warmup: bool = True
    verify_hash: bool = True
    optimization: str = "all"  # all | extended | basic | disabled
    optimized_model_path: str | None = None
    """If set, ORT writes the graph it actually runs here (export checks it for float Convs)."""
    profile_prefix: str | None = None  # write an ORT profile (per-node shapes and times) with this prefix


_OPT_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


def create_session(model_path: str | Path, options: SessionOptions | None = None) -> ort.InferenceSession:
    """Create a session for an ONNX file (no card needed: used by export before a card exists)."""
    options = options or SessionOptions()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file does not exist")
    so = ort.SessionOptions()
    so.graph_optimization_level = _OPT_LEVELS[options.optimization]
    if options.intra_op_threads:
        so.intra_op_num_threads = options.intra_op_threads
    so.log_severity_level = 3
    # ORT's worker threads spin-wait after a run, for the next one; on a device the next work is
    # this frame's post-processing, whose second thread they would take. Spinning stays on during
    # a run (its operators are many and short) and stops when the run ends.
    so.add_session_config_entry("session.force_spinning_stop", "1")
    if options.optimized_model_path:
        so.optimized_model_filepath = str(options.optimized_model_path)
    if options.profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = options.profile_prefix
    providers = resolve_providers(options.providers)
    try:
        return ort.InferenceSession(str(model_path), sess_options=so, providers=providers)
    except Exception as exc:  # ORT raises its own untyped errors for corrupt or unsupported models
        if providers != ["CPUExecutionProvider"]:
            log.warning("providers %s failed for %s (%s); falling back to CPU", providers, model_path.name, exc)
            try:
                return ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
            except Exception as cpu_exc:
                exc = cpu_exc
        raise ModelError(f"{model_path}: ONNX Runtime cannot load it ({exc})") from exc


@dataclass
class LoadedModel:
    """A verified model: its card, its session and the providers it actually runs on."""

    path: Path
    card: ModelCard
    session: ort.InferenceSession
    providers: list[str] = field(default_factory=list)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model and return outputs by name."""
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, inputs)))


def load_model(model_path: str | Path, options: SessionOptions | None = None) -> LoadedModel:
    """Load a shipped model: check its sha256 against its card, create the session, warm it up."""
    options = options or SessionOptions()
    card = load_card(model_path, verify=options.verify_hash)
    session = create_session(model_path, options)
    model = LoadedModel(path=Path(model_path), card=card, session=session, providers=session.get_providers())
    if options.warmup:
        model.run(warmup_inputs(session))
    return model


def warmup_inputs(session: ort.InferenceSession, spatial: int = 64) -> dict[str, np.ndarray]:
    """Zero inputs matching the session's declared shapes (symbolic dims get `spatial`, batch 1)."""
    feeds: dict[str, np.ndarray] = {}
    for inp in session.get_inputs():
        shape = []
        for i, dim in enumerate(inp.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            else:
                shape.append(1 if i == 0 else spatial)
        dtype = np.float32 if "float" in inp.type else np.int64 if "int64" in inp.type else np.float32
        feeds[inp.name] = np.zeros(shape, dtype=dtype)
    return feeds
