"""The encoder: one or more backbones, each fed one input stream, fused per scale.

* ST / MT nets: one backbone on the image.
* MBMT-Net: N backbones on the same image, fused by CAT / ADD / MUL; backbones can be
  frozen (taken from single-task checkpoints): frozen backbones get ``requires_grad =
  False`` and stay in eval mode (BatchNorm statistics fixed) even after ``.train()``.
* Multi-modal teacher: an RGB backbone on the image and a backbone on the extra modality
  (stream 1), fused by ADD at every scale (the Feature Fusion Module).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .backbone import Backbone
from .fusion import FeatureFusion

__all__ = ["MultiBackboneEncoder"]


class MultiBackboneEncoder(nn.Module):
    """Backbones + fusion: ``forward(*streams) -> [F4, F8, F16, F32]``.

    ``streams[i]`` is the input index of backbone ``i`` (0 = image, 1 = extra modality).
    """

    def __init__(self, backbones: Sequence[Backbone], fusion: str,
                 streams: Sequence[int] | None = None,
                 frozen: Sequence[bool] | bool = False) -> None:
        super().__init__()
        self.backbones = nn.ModuleList(backbones)
        self.streams = tuple(streams) if streams is not None else (0,) * len(backbones)
        self.fusion = FeatureFusion(fusion, [b.channels for b in backbones],
                                    [b.name for b in backbones])
        self.out_channels = self.fusion.out_channels
        flags = [frozen] * len(backbones) if isinstance(frozen, bool) else list(frozen)
        self.frozen = tuple(bool(f) for f in flags)
        for backbone, is_frozen in zip(self.backbones, self.frozen, strict=True):
            if is_frozen:
                backbone.requires_grad_(False)
                backbone.eval()

    @property
    def num_streams(self) -> int:
        return max(self.streams) + 1

    def train(self, mode: bool = True) -> MultiBackboneEncoder:
        """Like ``nn.Module.train`` but frozen backbones always stay in eval mode."""
        super().train(mode)
        for backbone, is_frozen in zip(self.backbones, self.frozen, strict=True):
            if is_frozen:
                backbone.eval()
        return self

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for backbone, stream, is_frozen in zip(self.backbones, self.streams, self.frozen,
                                                 strict=True):
            if is_frozen:
                with torch.no_grad():
                    features.append(backbone(inputs[stream]))
            else:
                features.append(backbone(inputs[stream]))
        return self.fusion(features)
