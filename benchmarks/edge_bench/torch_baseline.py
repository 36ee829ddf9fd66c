"""PyTorch eager baseline: the same network run by PyTorch on the same input tensors.

Optional: torch is imported only here, only when asked, and a device install without torch
reports the baseline as not available. The network is rebuilt from the architecture recorded in
the model card and, when the checkpoint it was exported from is given, loads those weights;
eager latency depends on the architecture and input size, not on the weight values, and the
report says which weights were used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np


class BaselineUnavailable(Exception):
    """The PyTorch baseline cannot run here; the message says why."""


@dataclass
class TorchEager:
    """A callable eager model plus a description of where its weights came from."""

    forward: Callable[[np.ndarray], Any]
    set_threads: Callable[[int], None]
    version: str
    weights: str


def architecture_from_card(card: Any) -> tuple[str, dict[str, Any]]:
    """(registry name, keyword arguments) of the network a model was exported from."""
    arch = card.extra.get("architecture") or card.extra.get("model")
    if not isinstance(arch, dict):
        raise BaselineUnavailable("the model card records no architecture (architecture: {name, ...})")
    arch = dict(arch)
    name = arch.pop("name", None) or arch.pop("arch", None)
    if not name:
        raise BaselineUnavailable("the model card's architecture has no name")
    return str(name), arch


def load_torch_eager(card: Any, checkpoint: Path | None = None) -> TorchEager:
    """Build the card's network in PyTorch (eval mode, no grad), with checkpoint weights if given."""
    try:
        import torch
    except ImportError:
        raise BaselineUnavailable("PyTorch is not installed (it is optional on a device)") from None
    try:
        from training.unet import build_model
    except ImportError as exc:
        raise BaselineUnavailable(f"the training package is not importable ({exc})") from None

    name, kwargs = architecture_from_card(card)
    network = build_model(name, **kwargs)
    weights = "random initialisation (latency does not depend on weight values)"
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        network.load_state_dict(state)
        weights = f"checkpoint {checkpoint}"
    network.eval()

    def forward(tensor: np.ndarray) -> Any:
        with torch.inference_mode():
            return network(torch.from_numpy(tensor))

    return TorchEager(forward=forward, set_threads=torch.set_num_threads, version=torch.__version__, weights=weights)
