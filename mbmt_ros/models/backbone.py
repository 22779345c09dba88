"""timm backbones exposing four feature maps at strides 4, 8, 16 and 32.

Two adapters. Weights: none (``pretrained=None``), a local file, or ``"imagenet"`` - timm's
default pretrained weights, through timm's own loading, download and cache
(:mod:`.pretrained`):

* EfficientNet-family models (timm's ``efficientnet`` module: EfficientNet, MixNet,
  MnasNet, ...) keep their final 1x1 ``conv_head`` (+ ``bn2`` with activation): as in
  EfficientPS, the stride-32 feature is that head's output (1408 channels for b2, 2048 for
  b5), which is what the MBMT-Net paper's parameter counts imply. The three finer features
  are the stage outputs that ``feature_info`` reports at strides 4, 8 and 16.
* Every other model (ResNet, HRNet, MobileNetV3, ...) is built with ``features_only`` and
  the last feature of each of the strides 4, 8, 16, 32 (by ``feature_info.reduction()``)
  is used.
"""
from __future__ import annotations

import logging
import os

import torch
from torch import nn

from ..errors import ModelConfigError
from .pretrained import IMAGENET, timm_weight_kwargs
from .state_dict import load_state_dict_checked, read_state_dict

__all__ = ["STRIDES", "Backbone", "create_backbone", "create_timm_model"]

LOG = logging.getLogger(__name__)

#: The strides of the four feature maps every backbone returns, finest first.
STRIDES: tuple[int, ...] = (4, 8, 16, 32)

# Keys of classifier / pooling heads that a full-model weight file may carry and we drop.
_CLASSIFIER_PREFIXES = ("classifier.", "fc.", "head.", "last_linear.")


def _select_by_stride(reductions: list[int], name: str) -> list[int]:
    """Index of the last feature at each of ``STRIDES``; error if one is missing."""
    picked = []
    for stride in STRIDES:
        idx = [i for i, r in enumerate(reductions) if r == stride]
        if not idx:
            raise ModelConfigError(
                f"backbone {name!r} has no feature map at stride {stride} (its strides are "
                f"{reductions}); MBMT models need strides {list(STRIDES)} - pick another "
                "backbone, e.g. efficientnet_b2, resnet50 or hrnet_w18"
            )
        picked.append(idx[-1])
    return picked


class Backbone(nn.Module):
    """A timm model returning ``[C4, C8, C16, C32]`` feature maps (strides 4..32).

    Attributes: ``name`` (timm name), ``in_chans``, ``channels`` (per-stride channel
    counts), ``body`` (the timm module, whose state-dict keys match timm's own).
    """

    def __init__(self, name: str, body: nn.Module, indices: list[int], channels: list[int],
                 in_chans: int, conv_head: bool) -> None:
        super().__init__()
        self.name = name
        self.in_chans = in_chans
        self.body = body
        self.channels: tuple[int, ...] = tuple(channels)
        self._indices = list(indices)
        self._conv_head = conv_head

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self._conv_head:
            last, feats = self.body.forward_intermediates(x, indices=self._indices)
            return [*feats, last]
        feats = self.body(x)
        return [feats[i] for i in self._indices]

    def load_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Load timm weights (full-model or features-only keys) from a local file."""
        state = read_state_dict(path)
        load_state_dict_checked(self.body, state, f"pretrained weights {path}",
                                ignore_unexpected=_CLASSIFIER_PREFIXES)
        LOG.info("loaded pretrained %s weights from %s", self.name, path)


def _entrypoint_module(name: str) -> str:
    import timm.models

    if not timm.models.is_model(name):
        raise ModelConfigError(
            f"unknown backbone {name!r}: not a timm model name. List valid names with "
            "`python -c \"import timm; print(timm.list_models('efficientnet*'))\"` "
            "(any model with features at strides 4, 8, 16, 32 works)"
        )
    return timm.models.model_entrypoint(name).__module__


def create_timm_model(name: str, pretrained: str | None, overlay: dict | None = None,
                      **kwargs) -> nn.Module:
    """``timm.create_model`` with ``pretrained: imagenet`` handled by timm itself; a failed
    download or an offline Hub without cached weights is one ModelConfigError line."""
    import timm

    weights = timm_weight_kwargs(pretrained, overlay)
    try:
        return timm.create_model(name, **weights, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if not weights["pretrained"]:
            raise
        from .pretrained import weights_cache_dir

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelConfigError(
            f"model.pretrained: imagenet: cannot load the ImageNet weights of {name!r} "
            f"({reason}); the cache is {weights_cache_dir(name)} - or set model.pretrained to "
            "a local weight file") from exc


def create_backbone(name: str, in_chans: int = 3, pretrained: str | None = None,
                    pretrained_cfg_overlay: dict | None = None) -> Backbone:
    """Build backbone ``name`` (a timm model name) for ``in_chans`` input channels.

    ``pretrained``: None (random weights), a local weight file (safetensors or a weights-only
    torch state dict), or ``"imagenet"``: timm's default pretrained weights, downloaded and
    cached by timm (``pretrained_cfg_overlay`` is passed to timm, e.g. ``{"file": path}``).
    """

    if not isinstance(name, str) or not name:
        raise ModelConfigError(f"backbone must be a timm model name, got {name!r}")
    if int(in_chans) < 1:
        raise ModelConfigError(f"backbone {name!r}: in_chans must be >= 1, got {in_chans}")
    conv_head = _entrypoint_module(name) == "timm.models.efficientnet"
    if conv_head:
        body = create_timm_model(name, pretrained, pretrained_cfg_overlay, num_classes=0,
                                 in_chans=in_chans)
        reductions = [int(info["reduction"]) for info in body.feature_info]
        indices = _select_by_stride(reductions, name)
        channels = [int(body.feature_info[i]["num_chs"]) for i in indices[:3]]
        channels.append(int(body.num_features))
        indices = indices[:3]
    else:
        try:
            body = create_timm_model(name, pretrained, pretrained_cfg_overlay,
                                     features_only=True, in_chans=in_chans)
        except ModelConfigError:
            raise
        except (RuntimeError, AssertionError, TypeError, ValueError) as exc:
            raise ModelConfigError(
                f"backbone {name!r} cannot expose intermediate features in timm ({exc}); "
                "pick a convolutional backbone such as efficientnet_b2, resnet50 or hrnet_w18"
            ) from exc
        indices = _select_by_stride(list(body.feature_info.reduction()), name)
        channels = [int(body.feature_info.channels()[i]) for i in indices]
    backbone = Backbone(name, body, indices, channels, int(in_chans), conv_head)
    if pretrained and pretrained != IMAGENET:
        backbone.load_pretrained(pretrained)
    return backbone
