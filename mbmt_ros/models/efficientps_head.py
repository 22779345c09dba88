"""EfficientPS's semantic head, used once per task on the two-way FPN's P4..P32.

* DPC (dense prediction cell) on P32 and P16: five 3x3 separable convs with dilations
  (1,6), (1,1), (6,21), (18,15), (6,3) - branches 2-4 take the (1,6) output, branch 5 the
  (18,15) output - concatenated (5x) and reduced by a 1x1 conv to ``head_channels``.
* LSFE (large-scale feature extractor) on P8 and P4: two 3x3 separable convs.
* MC (mismatch correction): two 3x3 separable convs, then bilinear upsampling to the next
  finer level's size.

``x = MC(DPC16 + up(DPC32))``, ``f8 = LSFE(P8) + x``, ``x = MC(f8)``, ``f4 = LSFE(P4) + x``;
``[f4, f8, DPC16, DPC32]`` resized to P4's size and concatenated: ``4 * head_channels``
channels (512 by default) at stride 4.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .norm_act import ConvNormAct
from .separable_conv import SeparableConvNormAct

__all__ = ["DPC_DILATIONS", "DensePredictionCell", "LargeScaleFeatureExtractor",
           "MismatchCorrection", "EfficientPSHead"]

#: (row, column) dilations of the DPC's five branches.
DPC_DILATIONS: tuple[tuple[int, int], ...] = ((1, 6), (1, 1), (6, 21), (18, 15), (6, 3))


def _resize(x: torch.Tensor, like: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=like.shape[-2:], mode=mode)
    return F.interpolate(x, size=like.shape[-2:], mode=mode, align_corners=False)


class DensePredictionCell(nn.Module):
    """DPC: multi-dilation context module (``in_channels`` -> ``out_channels``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            SeparableConvNormAct(in_channels, in_channels, 3, dilation=d) for d in DPC_DILATIONS)
        self.project = ConvNormAct(len(DPC_DILATIONS) * in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branches[0](x)
        b2 = self.branches[1](b1)
        b3 = self.branches[2](b1)
        b4 = self.branches[3](b1)
        b5 = self.branches[4](b4)
        return self.project(torch.cat([b1, b2, b3, b4, b5], dim=1))


class LargeScaleFeatureExtractor(nn.Sequential):
    """LSFE: two 3x3 separable convs (``in_channels`` -> ``out_channels`` -> same)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(SeparableConvNormAct(in_channels, out_channels),
                         SeparableConvNormAct(out_channels, out_channels))


class MismatchCorrection(nn.Module):
    """MC: two 3x3 separable convs, then bilinear upsampling to a given map's size."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(SeparableConvNormAct(channels, channels),
                                   SeparableConvNormAct(channels, channels))

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return _resize(self.convs(x), like)


class EfficientPSHead(nn.Module):
    """``[P4, P8, P16, P32]`` -> concatenated ``4 * head_channels`` features at stride 4."""

    def __init__(self, in_channels: int = 256, head_channels: int = 128) -> None:
        super().__init__()
        self.out_channels = 4 * head_channels
        self.dpc32 = DensePredictionCell(in_channels, head_channels)
        self.dpc16 = DensePredictionCell(in_channels, head_channels)
        self.lsfe8 = LargeScaleFeatureExtractor(in_channels, head_channels)
        self.lsfe4 = LargeScaleFeatureExtractor(in_channels, head_channels)
        self.mc16 = MismatchCorrection(head_channels)
        self.mc8 = MismatchCorrection(head_channels)

    def forward(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        p4, p8, p16, p32 = pyramid
        d32 = self.dpc32(p32)
        d16 = self.dpc16(p16)
        f8 = self.lsfe8(p8) + self.mc16(d16 + _resize(d32, d16), p8)
        f4 = self.lsfe4(p4) + self.mc8(f8, p4)
        return torch.cat([f4, _resize(f8, f4), _resize(d16, f4), _resize(d32, f4)], dim=1)
