"""PyTorch eager baseline: the same network run by PyTorch on the same input tensors.

Optional: torch is imported only here, only when asked, and a device install without torch
reports the baseline as not available. The network comes from the checkpoint it was exported
from (given with --checkpoint, or found beside the model under the name its card records);
without one it is rebuilt from the architecture in the card with freshly initialised weights.
Eager latency depends on the architecture and the input size, not on the weight values, and the
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
    arch = card.extra.get("architecture")
    if not isinstance(arch, dict) or not arch.get("name"):
        raise BaselineUnavailable("the model card records no architecture (architecture: {name, ...})")
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    return str(arch["name"]), kwargs


def checkpoint_beside(model_path: Path, card: Any) -> Path | None:
    """The checkpoint the card names, if it sits beside the model with the recorded sha256."""
    from runtime.contracts.modelcard import sha256_file

    info = card.extra.get("checkpoint")
    if not isinstance(info, dict) or not info.get("file"):
        return None
    path = model_path.parent / str(info["file"])
    if not path.is_file() or (info.get("sha256") and sha256_file(path) != info["sha256"]):
        return None
    return path


def load_torch_eager(model_path: Path, card: Any, checkpoint: Path | None = None) -> TorchEager:
    """The card's network in PyTorch (eval mode), with checkpoint weights when available."""
    try:
        import torch
    except ImportError:
        raise BaselineUnavailable("PyTorch is not installed (it is optional on a device)") from None
    try:
        from training.checkpoint import load_checkpoint
        from training.unet import build_model
    except ImportError as exc:
        raise BaselineUnavailable(f"the training package is not importable ({exc})") from None

    checkpoint = checkpoint or checkpoint_beside(model_path, card)
    if checkpoint is not None:
        network = load_checkpoint(checkpoint).build()
        weights = f"checkpoint {checkpoint.name}"
    else:
        name, kwargs = architecture_from_card(card)
        network = build_model(name, **kwargs)
        weights = f"{name} {kwargs} freshly initialised (no checkpoint; latency does not depend on weight values)"
    network.eval()

    def forward(tensor: np.ndarray) -> Any:
        with torch.inference_mode():
            return network(torch.from_numpy(tensor))

    return TorchEager(forward=forward, set_threads=torch.set_num_threads, version=torch.__version__, weights=weights)
