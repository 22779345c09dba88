"""EfficientPS's two-way feature pyramid network (top-down + bottom-up, summed).

For each input level two separate 1x1 lateral convs (+BN+LeakyReLU) project to
``out_channels``. The top-down branch adds each coarser level to the next finer one
(nearest upsampling); the bottom-up branch adds each finer level to the next coarser one
(nearest downsampling). The two branches are summed per level and refined by a 3x3
depthwise-separable conv, giving P4, P8, P16, P32. Resizing uses target sizes, not scale
factors, so any input size works.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .norm_act import ConvNormAct
from .separable_conv import SeparableConvNormAct

__all__ = ["TwoWayFPN"]


class TwoWayFPN(nn.Module):
    """``[C4, C8, C16, C32]`` -> ``[P4, P8, P16, P32]``, each with ``out_channels``."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.lateral_top_down = nn.ModuleList(ConvNormAct(c, out_channels) for c in in_channels)
        self.lateral_bottom_up = nn.ModuleList(ConvNormAct(c, out_channels) for c in in_channels)
        self.output_convs = nn.ModuleList(
            SeparableConvNormAct(out_channels, out_channels) for _ in in_channels)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        top_down = [conv(f) for conv, f in zip(self.lateral_top_down, features, strict=True)]
        bottom_up = [conv(f) for conv, f in zip(self.lateral_bottom_up, features, strict=True)]
        for i in range(len(top_down) - 1, 0, -1):
            top_down[i - 1] = top_down[i - 1] + F.interpolate(
                top_down[i], size=top_down[i - 1].shape[-2:], mode="nearest")
        for i in range(len(bottom_up) - 1):
            bottom_up[i + 1] = bottom_up[i + 1] + F.interpolate(
                bottom_up[i], size=bottom_up[i + 1].shape[-2:], mode="nearest")
        return [conv(t + b) for conv, t, b in zip(self.output_convs, top_down, bottom_up,
                                                      strict=True)]
