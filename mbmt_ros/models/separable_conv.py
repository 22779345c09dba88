"""Depthwise-separable convolution with BatchNorm + LeakyReLU after each of its two convs.

Matches mmcv's ``DepthwiseSeparableConvModule`` (used by EfficientPS's FPN and semantic
head): a depthwise ``k x k`` conv (+norm+act) followed by a pointwise 1x1 conv (+norm+act).
"""
from __future__ import annotations

from torch import nn

from .norm_act import ConvNormAct

__all__ = ["SeparableConvNormAct"]


class SeparableConvNormAct(nn.Sequential):
    """Depthwise ``kernel_size`` conv with ``dilation`` (row, col), then pointwise 1x1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: tuple[int, int] | int = 1) -> None:
        super().__init__(
            ConvNormAct(in_channels, in_channels, kernel_size, dilation=dilation,
                        groups=in_channels),
            ConvNormAct(in_channels, out_channels, 1),
        )
