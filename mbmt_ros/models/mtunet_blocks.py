"""MT-UNet building blocks (the MT-UNet paper, "Architecture Design and Protocols").

- :func:`conv_relu_bn` - the paper's layer: 3x3 convolution, ReLU, then batch norm.
- :class:`DenseEncoderBlock` - two conv layers connected DenseNet-style: each layer sees the
  concatenation of the block input and every earlier layer's output; the block hands the
  concatenation of everything on to the next block (dense connections through the whole
  encoder) and its last layer's output to the decoders as the U-Net skip.
- :class:`Bottleneck` - two conv layers and a 2x2 transposed convolution (upsampling).
- :class:`SoftAttention` - two 3x3 conv + BN layers (ReLU, then sigmoid): a mask in [0, 1].
- :class:`AttentionDecoderBlock` - two conv layers on ``[upsampled previous block, encoder
  skip, cross-task features]``; the attention mask computed from the first layer's output
  multiplies the second layer's output; an optional 2x2 transposed convolution upsamples
  the result (halving the channels, as in U-Net) for the next block.

Only convolutions, transposed convolutions (stride 2), batch norm, ReLU, sigmoid, max
pooling and concatenation: all TensorRT-supported.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["conv_relu_bn", "DenseEncoderBlock", "Bottleneck", "SoftAttention",
           "AttentionDecoderBlock"]


def conv_relu_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (same padding) -> ReLU -> BatchNorm, the paper's order."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(out_channels),
    )


class DenseEncoderBlock(nn.Module):
    """Two densely connected conv layers of ``out_channels`` each.

    ``forward(x) -> (skip, dense)``: ``skip`` is the second layer's output (``out_channels``,
    to the decoders), ``dense`` = ``[x, layer1, layer2]`` concatenated
    (``in_channels + 2 * out_channels``, to the next block after dropout + max pooling).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.dense_channels = in_channels + 2 * out_channels
        self.layer1 = conv_relu_bn(in_channels, out_channels)
        self.layer2 = conv_relu_bn(in_channels + out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.layer1(x)
        b = self.layer2(torch.cat([x, a], dim=1))
        return b, torch.cat([x, a, b], dim=1)


class Bottleneck(nn.Module):
    """Two conv layers (``in -> channels -> channels``) and a 2x2 stride-2 transposed conv."""

    def __init__(self, in_channels: int, channels: int, out_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(conv_relu_bn(in_channels, channels),
                                    conv_relu_bn(channels, channels))
        self.up = nn.ConvTranspose2d(channels, out_channels, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.layers(x))


class SoftAttention(nn.Module):
    """``sigmoid(BN(conv(ReLU(BN(conv(x))))))``: a per-pixel, per-channel mask in [0, 1]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AttentionDecoderBlock(nn.Module):
    """One task decoder block: two conv layers with soft attention, optional upsampling.

    ``forward(inputs) -> (features, upsampled)``: ``inputs`` are concatenated along channels
    (their channels must sum to ``in_channels``); ``features`` = ``mask(layer1) * layer2``;
    ``upsampled`` is ``features`` through a 2x2 stride-2 transposed conv to ``up_channels``
    (default ``channels``; U-Net halves them) - ``None`` when ``up_channels`` is 0.
    """

    def __init__(self, in_channels: int, channels: int, up_channels: int | None = None) -> None:
        super().__init__()
        up_channels = channels if up_channels is None else up_channels
        self.layer1 = conv_relu_bn(in_channels, channels)
        self.layer2 = conv_relu_bn(channels, channels)
        self.attention = SoftAttention(channels)
        self.up = nn.ConvTranspose2d(channels, up_channels, 2, stride=2) if up_channels else None

    def forward(self, inputs: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.layer1(torch.cat(list(inputs), dim=1))
        features = self.attention(x) * self.layer2(x)
        return features, (self.up(features) if self.up is not None else None)
