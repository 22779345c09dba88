"""PyTorch networks: backbones, fusion, two-way FPN, EfficientPS heads, ST/MT/MBMT nets.

Public entry points: :func:`build_model` (any registered ``arch`` from a config mapping),
:func:`save_model` / :func:`load_model` (safetensors checkpoints carrying their config)
and :func:`model_summary` (parameter / FLOP table).
"""
from __future__ import annotations

# Importing the architectures registers them in the (leaf) factory registry.
from . import architectures as _architectures  # noqa: F401
from . import mtinet as _mtinet  # noqa: F401
from . import mtunet as _mtunet  # noqa: F401
from .backbone import STRIDES, Backbone, create_backbone
from .base import MultiTaskModel
from .checkpoint import (
    CHECKPOINT_FILENAME,
    load_backbone_weights,
    load_model,
    load_weights,
    read_checkpoint_config,
    read_checkpoint_metadata,
    resolve_checkpoint_path,
    save_model,
)
from .factory import available_models, build_model, register_model, resolve_model_config
from .fusion import FUSION_MODES, FeatureFusion
from .model import DenseMultiTaskNet
from .summary import model_summary

__all__ = [
    "STRIDES", "Backbone", "create_backbone", "CHECKPOINT_FILENAME", "load_backbone_weights",
    "load_model", "load_weights", "read_checkpoint_config", "read_checkpoint_metadata",
    "resolve_checkpoint_path", "save_model", "available_models", "build_model",
    "register_model", "resolve_model_config", "FUSION_MODES", "FeatureFusion",
    "DenseMultiTaskNet", "MultiTaskModel", "model_summary",
]
