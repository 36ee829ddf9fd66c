"""U-Net for 4-class smear segmentation, with an optional cell-centre heat-map head.

Up-sampling is resize + convolution, never ConvTranspose: ONNX Runtime has no int8 CPU kernel
for ConvTranspose, which would leave a float island in the quantized graph. BatchNorm follows
every convolution; it folds into the convolution on export.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from runtime.contracts.classes import NUM_CLASSES
from runtime.contracts.errors import ConfigError


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU layers: the unit of every U-Net level."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


class UpBlock(nn.Module):
    """Resize x2, 3x3 conv to halve channels, concatenate the skip, DoubleConv."""

    def __init__(self, cin: int, cout: int, mode: str) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
        self.reduce = nn.Sequential(*_conv_bn_relu(cin, cout))
        self.fuse = DoubleConv(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.reduce(self.up(x))
        return self.fuse(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """U-Net with `depth` down-samplings (input sides must be multiples of 2**depth).

    forward(x) returns class logits (N x num_classes x H x W), or with `centre_head` a tuple
    (logits, centres) where centres is an N x 1 x H x W cell-centre heat-map logit.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = NUM_CLASSES,
        base_width: int = 16,
        depth: int = 4,
        centre_head: bool = False,
        upsample: str = "nearest",
    ) -> None:
        super().__init__()
        if not 1 <= depth <= 6:
            raise ConfigError(f"unet.depth: must be 1-6, got {depth}")
        if base_width < 1:
            raise ConfigError(f"unet.base_width: must be positive, got {base_width}")
        if upsample not in ("nearest", "bilinear"):
            raise ConfigError(f"unet.upsample: must be nearest or bilinear, got {upsample!r}")
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "base_width": base_width,
            "depth": depth,
            "centre_head": centre_head,
            "upsample": upsample,
        }
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(UpBlock(widths[i + 1], widths[i], upsample) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.centre = nn.Conv2d(widths[0], 1, 1) if centre_head else None
        if self.centre is not None:  # start at p = 0.1 everywhere, as heat-map detectors do
            nn.init.constant_(self.centre.bias, -2.19)

    @property
    def stride(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** self.config["depth"]

    @property
    def output_names(self) -> list[str]:
        return ["logits", "centres"] if self.centre is not None else ["logits"]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        y = skips.pop()
        for block in self.up:
            y = block(y, skips.pop())
        logits = self.head(y)
        if self.centre is None:
            return logits
        return logits, self.centre(y)


MODELS: dict[str, Callable[..., nn.Module]] = {"unet": UNet}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name; an unknown name or argument lists the valid ones."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}") from None
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from exc
