"""The base every architecture shares: its task/class attributes and one input check.

Each registered architecture (ST/MT/MBMT/teacher, MTI-Net, MT-UNet) is a
:class:`MultiTaskModel`, so the trainer, the exporter and the tests can rely on the same
attributes (``tasks``, ``num_classes``, ``extra_channels``, ``config``) and every model
refuses a wrong input with the same :class:`~mbmt_ros.errors.ModelInputError`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ModelInputError
from .encoder import MultiBackboneEncoder

__all__ = ["MultiTaskModel"]


class MultiTaskModel(nn.Module):
    """Common attributes and the input contract of every dense multi-task architecture.

    ``forward(image)`` takes a normalised RGB batch ``(N, 3, H, W)``; a multi-modal teacher
    (``extra_channels > 0``) takes ``forward(image, extra)`` with ``extra`` of shape
    ``(N, extra_channels, H, W)`` at the image's size. ``config`` is set by the factory.
    """

    def __init__(self, tasks: Sequence[str], num_classes: int, extra_channels: int = 0) -> None:
        super().__init__()
        self.tasks: tuple[str, ...] = tuple(tasks)
        self.num_classes = int(num_classes)
        self.extra_channels = int(extra_channels)
        self.config: dict[str, Any] = {}

    def check_inputs(self, image: torch.Tensor,
                     extra: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``[image]`` or ``[image, extra]`` after checking their shapes."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ModelInputError(
                f"expected a normalised RGB batch (N, 3, H, W), got shape {tuple(image.shape)}")
        if not self.extra_channels:
            if extra is not None:
                raise ModelInputError("this model takes only an image; an extra input was given")
            return [image]
        if extra is None or extra.dim() != 4 or extra.shape[1] != self.extra_channels \
                or extra.shape[-2:] != image.shape[-2:]:
            got = None if extra is None else tuple(extra.shape)
            raise ModelInputError(
                f"this multi-modal model needs forward(image, extra) with extra of shape "
                f"(N, {self.extra_channels}, H, W) at the image's size, got {got}")
        return [image, extra]

    def backbone_names(self) -> list[str]:
        """The timm names of the model's backbones, in encoder order (empty without any)."""
        encoder = getattr(self, "encoder", None)
        if not isinstance(encoder, MultiBackboneEncoder):
            return []
        return [b.name for b in encoder.backbones]
