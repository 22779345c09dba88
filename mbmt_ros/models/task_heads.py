"""Per-task output layers (MBMT-Net paper, Table 2) and the upsampling to input size.

* segmentation: 1x1 conv to ``num_classes`` logits (softmax is applied at inference).
* depth / normals: 3x3 conv (``in`` -> ``hidden_channels``, 256 in the paper), then 1x1 conv
  to 1 / 3 channels, no activation.

Outputs are upsampled (x4, bilinear) to the *input's* size - a target size, not a scale
factor, so inputs whose sides are not multiples of 32 still give full-size outputs.
Normals are divided by their per-pixel L2 norm (unit vectors).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..tasks import DEPTH, NORMALS, SEGMENTATION

__all__ = ["TaskHead", "task_output_channels", "create_task_head"]


def task_output_channels(task: str, num_classes: int) -> int:
    """Channels of a task's output: classes, 1 (depth) or 3 (normals)."""
    return {SEGMENTATION: num_classes, DEPTH: 1, NORMALS: 3}[task]


class TaskHead(nn.Module):
    """Output layers of one task + upsampling to ``size`` (+ L2 normalisation for normals)."""

    def __init__(self, task: str, layers: nn.Module) -> None:
        super().__init__()
        self.task = task
        self.layers = layers

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = F.interpolate(self.layers(x), size=size, mode="bilinear", align_corners=False)
        if self.task == NORMALS:
            out = F.normalize(out, p=2.0, dim=1, eps=1e-6)
        return out


def create_task_head(task: str, in_channels: int, num_classes: int,
                     hidden_channels: int = 256) -> TaskHead:
    """The paper's head for ``task`` on ``in_channels`` (512 by default) features."""
    out = task_output_channels(task, num_classes)
    if task == SEGMENTATION:
        layers: nn.Module = nn.Conv2d(in_channels, out, 1)
    else:
        layers = nn.Sequential(nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
                               nn.Conv2d(hidden_channels, out, 1))
    return TaskHead(task, layers)
