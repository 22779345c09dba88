"""Convolution + BatchNorm + LeakyReLU(0.01): the decoder's basic layer.

EfficientPS uses in-place activated BatchNorm (iABN) with leaky ReLU; the MBMT-Net paper
replaced iABN by ordinary BatchNorm, which is what this module builds.
"""
from __future__ import annotations

from torch import nn

__all__ = ["LEAKY_SLOPE", "create_norm_act", "ConvNormAct"]

#: Negative slope of the decoder's LeakyReLU (the iABN default of EfficientPS).
LEAKY_SLOPE = 0.01


def create_norm_act(channels: int) -> nn.Sequential:
    """BatchNorm2d followed by LeakyReLU(0.01)."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.LeakyReLU(LEAKY_SLOPE))


class ConvNormAct(nn.Sequential):
    """``Conv2d`` (no bias: BatchNorm follows) + BatchNorm + LeakyReLU(0.01)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, dilation: tuple[int, int] | int = 1, groups: int = 1) -> None:
        dil = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
        padding = (dil[0] * (kernel_size // 2), dil[1] * (kernel_size // 2))
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                      dilation=dil, groups=groups, bias=False),
            *create_norm_act(out_channels),
        )
