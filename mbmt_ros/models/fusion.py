"""Fusion of several backbones' per-scale features: CAT, ADD or MUL.

* ``cat`` concatenates along channels (MBMT-Net's default): output channels are the sum.
* ``add`` / ``mul`` combine element-wise (MBMT-Net-ADD/-MUL; ``add`` is also the
  multi-modal teacher's Feature Fusion Module); they need equal channels per scale.

If two backbones' maps differ in spatial size at a scale (possible for odd input sizes
with different architectures), the others are resized (nearest) to the first one's size.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelConfigError

__all__ = ["FUSION_MODES", "DEFAULT_FUSION", "FeatureFusion", "check_fusion", "fused_channels"]

FUSION_MODES: tuple[str, ...] = ("cat", "add", "mul")
#: The paper's fusion (concatenation); add / mul are its ablations.
DEFAULT_FUSION = "cat"


def check_fusion(mode: object, key: str = "fusion") -> str:
    """``mode`` if it names a fusion; else a ``ModelConfigError`` naming ``key`` and the choices."""
    if mode not in FUSION_MODES:
        raise ModelConfigError(f"unknown {key} {mode!r}; choose one of {list(FUSION_MODES)}")
    return str(mode)


def fused_channels(mode: str, channels: Sequence[Sequence[int]],
                   names: Sequence[str] | None = None) -> tuple[int, ...]:
    """Per-scale channels after fusing backbones with per-scale ``channels``.

    Raises a ``ModelConfigError`` naming the backbones and channels if ``mode`` is
    element-wise and the channels differ, or if ``mode`` is unknown.
    """
    check_fusion(mode)
    if not channels:
        raise ModelConfigError("fusion needs at least one backbone")
    scales = len(channels[0])
    if mode == "cat":
        return tuple(sum(ch[s] for ch in channels) for s in range(scales))
    if any(tuple(ch) != tuple(channels[0]) for ch in channels):
        names = list(names) if names else [f"backbone {i}" for i in range(len(channels))]
        detail = ", ".join(f"{n}: {list(ch)}" for n, ch in zip(names, channels, strict=True))
        raise ModelConfigError(
            f"fusion {mode!r} needs equal channels per scale in every backbone, got {detail}; "
            "use fusion 'cat' or backbones of the same family/width"
        )
    return tuple(channels[0])


class FeatureFusion(nn.Module):
    """Fuse ``[[f4, f8, f16, f32] per backbone]`` into one ``[f4, f8, f16, f32]``."""

    def __init__(self, mode: str, channels: Sequence[Sequence[int]],
                 names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.mode = mode
        self.out_channels = fused_channels(mode, channels, names)

    def forward(self, features: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
        if len(features) == 1:
            return list(features[0])
        fused = []
        for per_backbone in zip(*features, strict=True):
            size = per_backbone[0].shape[-2:]
            maps = [f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="nearest")
                    for f in per_backbone]
            if self.mode == "cat":
                fused.append(torch.cat(maps, dim=1))
            else:
                out = maps[0]
                for m in maps[1:]:
                    out = out + m if self.mode == "add" else out * m
                fused.append(out)
        return fused

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, out_channels={self.out_channels}"
