"""The dense multi-task network, assembled from encoder, two-way FPN and per-task heads.

Every architecture of :mod:`mbmt_ros.models.architectures` (ST, MT, MBMT, teacher) is a
:class:`DenseMultiTaskNet`; they differ only in how the encoder is built.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import MultiTaskModel
from .efficientps_head import EfficientPSHead
from .encoder import MultiBackboneEncoder
from .task_heads import create_task_head
from .two_way_fpn import TwoWayFPN

__all__ = ["DenseMultiTaskNet", "backbone_prefix"]


def backbone_prefix(index: int) -> str:
    """State-dict prefix of backbone ``index``'s timm module inside a DenseMultiTaskNet."""
    return f"encoder.backbones.{index}.body."


class DenseMultiTaskNet(MultiTaskModel):
    """Encoder -> two-way FPN -> per task (EfficientPS semantic head -> task head).

    ``forward(image)`` (or ``forward(image, extra)`` for a multi-modal teacher) returns a
    dict task -> tensor at the input size: ``segmentation`` logits ``(N, C, H, W)``,
    ``depth`` ``(N, 1, H, W)``, ``normals`` ``(N, 3, H, W)`` unit vectors.

    Attributes: ``tasks`` (canonical order), ``num_classes``, ``extra_channels`` (channels
    of the teacher's extra input, 0 if none), ``config`` (set by the factory).
    """

    def __init__(self, encoder: MultiBackboneEncoder, tasks: Sequence[str], num_classes: int,
                 fpn_channels: int = 256, head_channels: int = 128,
                 task_hidden_channels: int = 256, extra_channels: int = 0) -> None:
        super().__init__(tasks, num_classes, extra_channels)
        self.encoder = encoder
        self.fpn = TwoWayFPN(encoder.out_channels, fpn_channels)
        self.decoders = nn.ModuleDict(
            {t: EfficientPSHead(fpn_channels, head_channels) for t in self.tasks})
        self.heads = nn.ModuleDict(
            {t: create_task_head(t, 4 * head_channels, self.num_classes, task_hidden_channels)
             for t in self.tasks})

    def forward(self, image: torch.Tensor,
                extra: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        inputs = self.check_inputs(image, extra)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        pyramid = self.fpn(self.encoder(*inputs))
        return {t: self.heads[t](self.decoders[t](pyramid), size) for t in self.tasks}
