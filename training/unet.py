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


class LiteUNet(nn.Module):
    """A U-Net for the edge: its levels run at half the input resolution or less.

    At camera-field sizes the time of a U-Net goes to moving full-resolution activations, not to
    arithmetic, so this network never holds a wide full-resolution tensor: a stride-2 stem, a
    stride-2 convolution (not max-pooling) into each lower level, learned up-sampling by a 1x1
    convolution and DepthToSpace (pure data movement, which int8 graphs run without a float
    island), and the class logits bilinearly up-sampled to the input size at the very end.
    Same inputs and outputs as `UNet`.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = NUM_CLASSES,
        base_width: int = 16,
        depth: int = 3,
        centre_head: bool = False,
        upsample: str = "shuffle",
        stem_stride: int = 2,
    ) -> None:
        super().__init__()
        if not 1 <= depth <= 5:
            raise ConfigError(f"lite_unet.depth: must be 1-5, got {depth}")
        if stem_stride not in (2, 4):
            raise ConfigError(f"lite_unet.stem_stride: must be 2 or 4, got {stem_stride}")
        if base_width < 1:
            raise ConfigError(f"lite_unet.base_width: must be positive, got {base_width}")
        if upsample not in ("shuffle", "nearest"):
            raise ConfigError(f"lite_unet.upsample: must be shuffle or nearest, got {upsample!r}")
        self.config: dict[str, Any] = {
            "in_channels": in_channels, "num_classes": num_classes, "base_width": base_width,
            "depth": depth, "centre_head": centre_head, "upsample": upsample,
        }
        if stem_stride != 2:  # only when set: the configs of the trained models stay as they were
            self.config["stem_stride"] = stem_stride
        widths = [base_width * 2**i for i in range(depth + 1)]
        # A stride-4 stem halves the top level again: its first stride-2 convolution makes half the
        # width, a second one the full width (a working scale of a quarter of the input).
        first = widths[0] if stem_stride == 2 else max(1, widths[0] // 2)
        stem: list[nn.Module] = [nn.Conv2d(in_channels, first, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(first),
                                 nn.ReLU(inplace=True)]
        if stem_stride == 4:
            stem += [nn.Conv2d(first, widths[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                     nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem, *_conv_bn_relu(widths[0], widths[0]))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(widths[i + 1]), nn.ReLU(inplace=True), *_conv_bn_relu(widths[i + 1], widths[i + 1]))
            for i in range(depth))
        self.up = nn.ModuleList(_LiteUp(widths[i + 1], widths[i], upsample) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.centre = nn.Conv2d(widths[0], 1, 1) if centre_head else None
        if self.centre is not None:
            nn.init.constant_(self.centre.bias, -2.19)

    @property
    def stride(self) -> int:
        return self.config.get("stem_stride", 2) * 2 ** self.config["depth"]

    @property
    def output_names(self) -> list[str]:
        return ["logits", "centres"] if self.centre is not None else ["logits"]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        for block in self.up:
            y = block(y, skips.pop())
        heads = self.head(y) if self.centre is None else torch.cat([self.head(y), self.centre(y)], dim=1)
        heads = nn.functional.interpolate(heads, size=size, mode="bilinear", align_corners=False)
        if self.centre is None:
            return heads
        return heads[:, :-1], heads[:, -1:]


class _LiteUp(nn.Module):
    """Up-sample x2 with a 1x1 conv + DepthToSpace (or conv + nearest), add the skip, one 3x3 conv."""

    def __init__(self, cin: int, cout: int, mode: str) -> None:
        super().__init__()
        if mode == "shuffle":
            self.up = nn.Sequential(nn.Conv2d(cin, 4 * cout, 1, bias=False), nn.BatchNorm2d(4 * cout),
                                    nn.ReLU(inplace=True), nn.PixelShuffle(2))
        else:
            self.up = nn.Sequential(*_conv_bn_relu(cin, cout), nn.Upsample(scale_factor=2, mode="nearest"))
        self.fuse = nn.Sequential(*_conv_bn_relu(2 * cout, cout), *_conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.up(x), skip], dim=1))


MODELS["lite_unet"] = LiteUNet
