"""The registered architectures: ``st``, ``mt``, ``mbmt`` and ``teacher``.

Each is a thin builder that creates the backbones and hands them to
:class:`~mbmt_ros.models.model.DenseMultiTaskNet`; config keys and defaults are those of
the ``register_model`` call (documented in ``docs/models.md``).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..errors import ModelConfigError
from ..tasks import SEGMENTATION
from .backbone import Backbone, create_backbone
from .checkpoint import load_backbone_weights
from .encoder import MultiBackboneEncoder
from .factory import register_model
from .fusion import DEFAULT_FUSION, check_fusion
from .model import DenseMultiTaskNet

__all__ = ["st_net", "mt_net", "mbmt_net", "teacher_net", "EXTRA_MODALITIES"]

LOG = logging.getLogger(__name__)

#: Extra input modalities of the multi-modal teacher.
EXTRA_MODALITIES: tuple[str, ...] = ("depth", SEGMENTATION)


def _assemble(cfg: dict[str, Any], backbones: Sequence[Backbone], fusion: str = DEFAULT_FUSION,
              streams: Sequence[int] | None = None, frozen: Sequence[bool] | bool = False,
              extra_channels: int = 0) -> DenseMultiTaskNet:
    encoder = MultiBackboneEncoder(backbones, fusion, streams, frozen)
    return DenseMultiTaskNet(encoder, cfg["tasks"], cfg["num_classes"],
                             fpn_channels=cfg["fpn_channels"], head_channels=cfg["head_channels"],
                             task_hidden_channels=cfg["task_hidden_channels"],
                             extra_channels=extra_channels)


def _pretrained(cfg: dict[str, Any], load_weights: bool) -> str | None:
    path = cfg.get("pretrained")
    if path is not None and not isinstance(path, str):
        raise ModelConfigError(f"model.pretrained must be a file path or null, got {path!r}")
    return path if load_weights else None


@register_model("st", {"backbone": "efficientnet_b2", "pretrained": None},
                "single-task net: one backbone, one task (EfficientPS-SS/-DE/-SNP)")
def st_net(cfg: dict[str, Any], load_weights: bool = True) -> DenseMultiTaskNet:
    """Single-task net: one backbone, one task."""
    if len(cfg["tasks"]) != 1:
        raise ModelConfigError(
            f"an 'st' model has exactly one task, got tasks {cfg['tasks']}; use arch 'mt' "
            "or 'mbmt' for several")
    backbone = create_backbone(cfg["backbone"], pretrained=_pretrained(cfg, load_weights))
    return _assemble(cfg, [backbone])


@register_model("mt", {"backbone": "efficientnet_b5", "pretrained": None},
                "multi-task net: one shared backbone, all tasks (MT-Net)")
def mt_net(cfg: dict[str, Any], load_weights: bool = True) -> DenseMultiTaskNet:
    """Multi-task net: one shared backbone, a head per task."""
    backbone = create_backbone(cfg["backbone"], pretrained=_pretrained(cfg, load_weights))
    return _assemble(cfg, [backbone])


def _name_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ModelConfigError(f"model.{key} must be a non-empty list of timm names, got {value!r}")
    return list(value)


def extra_modality_channels(cfg: dict[str, Any]) -> int:
    """Input channels of a teacher's extra modality: 1 for depth, one-hot classes for
    segmentation; an unknown ``extra_modality`` is a :class:`ModelConfigError`."""
    modality = cfg["extra_modality"]
    if modality not in EXTRA_MODALITIES:
        raise ModelConfigError(
            f"unknown model.extra_modality {modality!r}; choose one of {list(EXTRA_MODALITIES)}")
    return 1 if modality == "depth" else cfg["num_classes"]


def validate_multi_backbone(cfg: dict[str, Any]) -> tuple[list[str], list[Any] | None]:
    """Check the shared multi-backbone keys (``backbones``, ``fusion``, ``freeze_backbones``,
    ``backbone_checkpoints``) of MBMT-style models; return the names and checkpoints."""
    names = _name_list(cfg["backbones"], "backbones")
    check_fusion(cfg["fusion"], "model.fusion")
    if not isinstance(cfg["freeze_backbones"], bool):
        raise ModelConfigError(
            f"model.freeze_backbones must be true or false, got {cfg['freeze_backbones']!r}")
    checkpoints = cfg["backbone_checkpoints"]
    if checkpoints is not None and (isinstance(checkpoints, str)
                                    or not isinstance(checkpoints, Sequence)
                                    or len(checkpoints) != len(names)):
        raise ModelConfigError(
            f"model.backbone_checkpoints must list one checkpoint (or null) per backbone "
            f"({len(names)} backbones), got {checkpoints!r}")
    return names, None if checkpoints is None else list(checkpoints)


@register_model("mbmt", {"backbones": ["efficientnet_b2"] * 3, "backbone_checkpoints": None,
                         "freeze_backbones": True, "fusion": DEFAULT_FUSION},
                "multi-backbone multi-task net: N (frozen, ST-pretrained) backbones fused")
def mbmt_net(cfg: dict[str, Any], load_weights: bool = True) -> DenseMultiTaskNet:
    """MBMT-Net: N backbones, optionally from ST checkpoints and frozen, fused by CAT/ADD/MUL."""
    names, checkpoints = validate_multi_backbone(cfg)
    backbones = [create_backbone(n) for n in names]
    if checkpoints is not None and load_weights:
        for backbone, path in zip(backbones, checkpoints, strict=True):
            if path is not None:
                load_backbone_weights(backbone, path)
    elif cfg["freeze_backbones"] and load_weights:
        LOG.warning("mbmt: freezing backbones that were not loaded from checkpoints "
                    "(set model.backbone_checkpoints)")
    return _assemble(cfg, backbones, cfg["fusion"], frozen=cfg["freeze_backbones"])


@register_model("teacher", {"backbone": "efficientnet_b2", "extra_backbone": None,
                            "extra_modality": "depth", "pretrained": None},
                "multi-modal teacher: RGB + extra-modality backbones, features added (FFM)")
def teacher_net(cfg: dict[str, Any], load_weights: bool = True) -> DenseMultiTaskNet:
    """Multi-modal teacher: RGB backbone + a backbone on depth or one-hot segmentation."""
    extra_channels = extra_modality_channels(cfg)
    rgb = create_backbone(cfg["backbone"], pretrained=_pretrained(cfg, load_weights))
    extra = create_backbone(cfg["extra_backbone"] or cfg["backbone"], in_chans=extra_channels)
    return _assemble(cfg, [rgb, extra], "add", streams=(0, 1), extra_channels=extra_channels)
