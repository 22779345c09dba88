"""MTI-Net building blocks (Vandenhende et al., ECCV 2020), written from the paper.

One module per idea of the paper:

- :class:`BasicResidualBlock` - the ResNet basic block the paper builds its task heads from.
- :class:`SqueezeExcitation` - channel gating, used by the feature propagation module.
- :class:`InitialTaskHead` - per task and scale: task features + an initial prediction
  (the "front-end", deeply supervised).
- :class:`MultiModalDistillation` - Eq. 1: each task adds spatially attended features of
  the other tasks to its own, at one scale.
- :class:`FeaturePropagation` - the FPM (Fig. 3): task features of a lower-resolution scale
  are harmonised into a shared representation, refined per task by SE and upsampled to the
  next higher-resolution scale.
- :class:`FeatureAggregation` - the FA: distilled features of all scales upsampled to the
  1/4 scale, concatenated and decoded by two convolutions per task.

All operations export to ONNX with TensorRT-supported ops: convolutions, batch norm, ReLU,
sigmoid, softmax, ReduceMean, concatenation and bilinear ``Resize`` with explicit sizes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "conv_bn_relu", "BasicResidualBlock", "SqueezeExcitation", "InitialTaskHead",
    "MultiModalDistillation", "FeaturePropagation", "FeatureAggregation", "resize_to",
]


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize to an explicit ``(H, W)`` (ONNX ``Resize`` with sizes, not scales)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear",
                         align_corners=False)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """``Conv(k, same padding, no bias) -> BatchNorm -> ReLU``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BasicResidualBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al.): global mean -> bottleneck MLP -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)  # ONNX ReduceMean, any input size
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class InitialTaskHead(nn.Module):
    """Front-end head of one task at one scale: two basic residual blocks give the task
    features, a 1x1 convolution gives the initial (deeply supervised) prediction."""

    def __init__(self, in_channels: int, channels: int, out_channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            BasicResidualBlock(in_channels, channels), BasicResidualBlock(channels, channels)
        )
        self.predict = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        return feats, self.predict(feats)


class _SpatialAttention(nn.Module):
    """``sigmoid(W x) * (W' x)`` of Eq. 1: a spatial mask applied to transformed features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mask = nn.Conv2d(channels, channels, 3, padding=1)
        self.value = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mask(x)) * self.value(x)


class MultiModalDistillation(nn.Module):
    """Multi-modal distillation at one scale (Eq. 1 of the paper).

    ``F_k^o = F_k^i + sum_{l != k} sigmoid(W_kl F_l^i) * (W'_kl F_l^i)`` for every target
    task ``k`` in ``targets`` drawn from ``sources`` (targets are the final tasks; sources also
    hold the auxiliary tasks, which are distilled *from* but never *into*).
    """

    def __init__(self, sources: Sequence[str], targets: Sequence[str], channels: int) -> None:
        super().__init__()
        self.sources = tuple(sources)
        self.targets = tuple(targets)
        self.attention = nn.ModuleDict({
            f"{k}__{src}": _SpatialAttention(channels)
            for k in self.targets for src in self.sources if src != k
        })

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for k in self.targets:
            y = features[k]
            for src in self.sources:
                if src != k:
                    y = y + self.attention[f"{k}__{src}"](features[src])
            out[k] = y
        return out


class FeaturePropagation(nn.Module):
    """Feature propagation module (FPM, Fig. 3) from one scale to the next higher resolution.

    Feature harmonisation: the N task features (``in_channels`` each) are concatenated and
    passed through ``f`` (two basic residual blocks that reduce the channels, then a 1x1
    convolution back to ``N * in_channels``); the result is split per task and soft-maxed over
    the task axis to give a task attention mask. The attended features are concatenated and
    reduced to a shared representation of ``in_channels``. Each task then gates the shared
    representation with its own SE block and adds it to its features as a residual. The refined
    features are mapped to ``out_channels`` (1x1 conv-BN-ReLU) and resized to ``size``.
    """

    def __init__(self, tasks: Sequence[str], in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        n = len(self.tasks)
        hidden = max(in_channels // 4, 4)
        self.harmonise = nn.Sequential(
            BasicResidualBlock(n * in_channels, hidden),
            BasicResidualBlock(hidden, hidden),
            nn.Conv2d(hidden, n * in_channels, 1),
        )
        self.reduce = conv_bn_relu(n * in_channels, in_channels, 1)
        self.gates = nn.ModuleDict({t: SqueezeExcitation(in_channels) for t in self.tasks})
        self.project = nn.ModuleDict({t: conv_bn_relu(in_channels, out_channels, 1)
                                      for t in self.tasks})

    def forward(self, features: Mapping[str, torch.Tensor], size: Sequence[int]
                ) -> dict[str, torch.Tensor]:
        stacked = [features[t] for t in self.tasks]
        logits = self.harmonise(torch.cat(stacked, dim=1))
        n, c = len(self.tasks), stacked[0].shape[1]
        # (B, N*C, H, W) -> (B, N, C, H, W): softmax over the task axis
        mask = torch.softmax(logits.reshape(logits.shape[0], n, c, *logits.shape[2:]), dim=1)
        attended = torch.cat([mask[:, i] * stacked[i] for i in range(n)], dim=1)
        shared = self.reduce(attended)
        out = {}
        for t in self.tasks:
            refined = features[t] + self.gates[t](shared)
            out[t] = resize_to(self.project[t](refined), size)
        return out


class FeatureAggregation(nn.Module):
    """Feature aggregation (FA) for one task: distilled features of every scale are upsampled
    to the highest-resolution scale, concatenated and decoded by two 3x3 conv-BN-ReLU layers
    and a 1x1 prediction convolution (the paper's HRNet variant)."""

    def __init__(self, in_channels: Sequence[int], channels: int, out_channels: int) -> None:
        super().__init__()
        self.decode = nn.Sequential(
            conv_bn_relu(sum(in_channels), channels), conv_bn_relu(channels, channels)
        )
        self.predict = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        x = torch.cat([resize_to(f, size) for f in features], dim=1)
        return self.predict(self.decode(x))
