"""Training weights from an exported fp32 model, for fine-tuning when only the ONNX file is left.

Export runs the network in eval mode, so each Conv + BatchNorm pair is folded into one Conv with a
bias. Folding loses the split between the convolution and the normalisation, so this module puts
it back in a form that trains like the original: the folded weight goes into the Conv, and each
BatchNorm gets running statistics measured on training crops (the Conv's output without bias)
and an affine part that undoes them exactly, plus the folded bias. In eval mode the rebuilt model
equals the ONNX model; in train mode, batch statistics close to the measured ones leave it nearly
unchanged, so a fine-tune starts where the exported model is rather than from scratch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from runtime.contracts.errors import ModelError
from runtime.contracts.modelcard import load_card, sha256_file
from training.unet import build_model

STAT_BATCHES = 8
"""Training batches over which each BatchNorm's running statistics are measured."""


def model_from_onnx(onnx_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the PyTorch model of an exported fp32 model (its card names the architecture) with
    each BatchNorm as an exact identity-plus-bias; returns the model and its spec."""
    onnx_path = Path(onnx_path)
    card = load_card(onnx_path)
    arch = dict(card.extra.get("architecture") or {})
    if not arch.get("name"):
        raise ModelError(f"{onnx_path}: the card names no architecture to rebuild")
    spec = {"name": arch.pop("name"), "kwargs": arch}
    model = build_model(spec["name"], **spec["kwargs"]).eval()
    graph = onnx.load(str(onnx_path)).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    own = model.state_dict()  # a conv export left unfolded keeps its parameter's name
    folded = [(weights[n.input[1]], weights[n.input[2]] if len(n.input) > 2 else None)
              for n in graph.node if n.op_type == "Conv" and n.input[1] in weights and n.input[1] not in own]
    pairs = _conv_norm_pairs(model)
    paired = {id(conv) for conv, _ in pairs}
    plain = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and id(m) not in paired]
    if len(folded) != len(pairs) or any(f"{name}.weight" not in weights for name, _ in plain):
        raise ModelError(f"{onnx_path}: {len(folded)} folded convolutions do not match {spec['name']} {spec['kwargs']} "
                         f"({len(pairs)} conv+norm pairs, {len(plain)} plain convolutions)")
    with torch.no_grad():
        for (conv, norm), (w, b) in zip(pairs, folded):
            _set(conv.weight, w, onnx_path)
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)  # (z - 0) / sqrt(var + eps) == z
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(np.array(b, dtype=np.float32)) if b is not None else torch.zeros_like(norm.bias))
        for name, conv in plain:
            _set(conv.weight, weights[f"{name}.weight"], onnx_path)
            if conv.bias is not None and f"{name}.bias" in weights:
                _set(conv.bias, weights[f"{name}.bias"], onnx_path)
    return model, spec


def recalibrate_norms(model: nn.Module, images: list[torch.Tensor]) -> None:
    """Give every BatchNorm the statistics its input has on `images` while keeping the function:
    running mean m and variance v are measured, then weight sqrt(v + eps) and bias m + b (b the
    folded bias) make eval-mode output identical and train-mode output close to it."""
    pairs = _conv_norm_pairs(model)
    sums: dict[int, list[torch.Tensor]] = {}

    def hook(norm: nn.BatchNorm2d, inputs: tuple[torch.Tensor, ...]) -> None:
        z = inputs[0].detach().double()
        acc = sums.setdefault(id(norm), [torch.zeros(z.shape[1], dtype=torch.float64)] * 2 + [torch.zeros(1, dtype=torch.float64)])
        acc[0] = acc[0] + z.sum(dim=(0, 2, 3))
        acc[1] = acc[1] + (z * z).sum(dim=(0, 2, 3))
        acc[2] = acc[2] + z.shape[0] * z.shape[2] * z.shape[3]

    handles = [norm.register_forward_pre_hook(hook) for _, norm in pairs]
    try:
        model.eval()
        with torch.no_grad():
            for batch in images:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for _, norm in pairs:
            total, squares, count = sums[id(norm)]
            mean = total / count
            var = (squares / count - mean * mean).clamp_min(1e-6)
            bias = norm.bias.double().clone()
            norm.running_mean.copy_(mean.float())
            norm.running_var.copy_(var.float())
            norm.weight.copy_(torch.sqrt(var + norm.eps).float())
            norm.bias.copy_((mean + bias).float())


def init_payload(onnx_path: str | Path, images: list[torch.Tensor]) -> dict[str, Any]:
    """What training.loop needs to fine-tune from an exported model: spec, state dict, lineage."""
    model, spec = model_from_onnx(onnx_path)
    recalibrate_norms(model, images)
    return {"model": spec, "state_dict": model.state_dict(),
            "init": {"file": Path(onnx_path).name, "sha256": sha256_file(onnx_path)}}


def _conv_norm_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Each Conv2d directly followed by a BatchNorm2d in a Sequential, in forward order (the order
    export writes them)."""
    pairs = []
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module.children())
            pairs += [(a, b) for a, b in zip(children, children[1:])
                      if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)]
    return pairs


def _set(param: torch.Tensor, value: np.ndarray, path: Path) -> None:
    if tuple(param.shape) != value.shape:
        raise ModelError(f"{path}: weight of shape {value.shape} does not fit {tuple(param.shape)}")
    param.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))
