"""MTI-Net (Vandenhende et al., ECCV 2020) and the imbalanced-data paper's MTI-Net teacher.

Assembled from the shared encoder (:class:`~mbmt_ros.models.encoder.MultiBackboneEncoder`:
one or more timm backbones at strides 4/8/16/32, fused per scale), an optional FPN neck and
the :class:`MTINetDecoder` built from :mod:`mbmt_ros.models.mtinet_blocks`:

1. per scale (coarsest first) an initial prediction of every front-end task (the final tasks
   plus the auxiliary ones, e.g. ``edges``) from the backbone features concatenated with the
   FPM output of the coarser scale - these initial predictions are deeply supervised;
2. multi-modal distillation of the task features at every scale (Eq. 1);
3. the feature propagation module (FPM) from each scale to the next finer one;
4. feature aggregation (FA) of the distilled features of all scales into the final
   predictions of the final tasks (auxiliary tasks live in the front-end only).

Registered architectures (``build_model({"arch": ...})``, keys in ``docs/architectures.md``):

- ``mtinet``: MTI-Net on one backbone (``hrnet_w18`` as in the paper), or on MBMT's fused
  multi-backbone features when ``backbones`` lists several (optionally from ST checkpoints
  and frozen, exactly like ``mbmt``) - MTI-Net as the decoder of MBMT-Net.
- ``mti_teacher``: the imbalanced-data paper's teacher: an HRNet-w18 on the RGB image and
  one on the extra modality, features added at every scale (FFM), the MTI-Net decoder.

Deep supervision: ``forward(image, return_aux=True)`` returns ``(outputs, aux)`` where
``aux`` is a list, finest scale (1/4) first, of dicts front-end task -> initial prediction
resized to the input size (same conventions as the outputs; ``edges`` are logits); a plain
``forward(image)`` does not compute them. The paper trains them with the same losses and
weights as the final predictions: ``training.deep_supervision`` computes those terms (the
losses belong to training, not to the network).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelConfigError
from ..tasks import DEPTH, NORMALS, SEGMENTATION, TASKS
from .architectures import extra_modality_channels, validate_multi_backbone
from .backbone import STRIDES, Backbone, create_backbone, create_timm_model
from .base import MultiTaskModel
from .checkpoint import load_backbone_weights
from .encoder import MultiBackboneEncoder
from .factory import register_model
from .fusion import DEFAULT_FUSION
from .mtinet_blocks import (
    FeatureAggregation,
    FeaturePropagation,
    InitialTaskHead,
    MultiModalDistillation,
    resize_to,
)
from .pretrained import IMAGENET
from .state_dict import load_state_dict_checked, read_state_dict
from .task_heads import task_output_channels
from .two_way_fpn import TwoWayFPN

__all__ = [
    "EDGES", "AUX_TASKS", "NECKS", "MTINetDecoder", "MTINet", "mtinet", "mti_teacher",
    "finalize_prediction", "create_mti_backbone",
]

#: The auxiliary semantic-edge task (front-end only; targets derived from segmentation).
EDGES = "edges"
#: Tasks that may be auxiliary (predicted in the front-end only).
AUX_TASKS: tuple[str, ...] = (*TASKS, EDGES)
#: Optional necks between the encoder and the MTI-Net decoder.
NECKS: tuple[str, ...] = ("none", "fpn")


def _out_channels(task: str, num_classes: int) -> int:
    return 1 if task == EDGES else task_output_channels(task, num_classes)


def finalize_prediction(task: str, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a raw prediction to ``size``; normals become unit vectors (model contract)."""
    x = resize_to(x, size)
    if task == NORMALS:
        x = F.normalize(x, p=2.0, dim=1, eps=1e-6)
    return x


class MTINetDecoder(nn.Module):
    """The MTI-Net decoder on four feature maps ``[F4, F8, F16, F32]``.

    ``in_channels``/``task_channels``: per-scale channels of the input features and of the
    task features (finest first). ``aux_tasks`` are predicted in the front-end only.
    """

    def __init__(self, in_channels: Sequence[int], tasks: Sequence[str], num_classes: int,
                 task_channels: Sequence[int], aggregation_channels: int,
                 aux_tasks: Sequence[str] = (), fpm: bool = True) -> None:
        super().__init__()
        if len(in_channels) != len(STRIDES) or len(task_channels) != len(STRIDES):
            raise ModelConfigError(
                f"MTI-Net needs {len(STRIDES)} scales, got in_channels {list(in_channels)} "
                f"and task_channels {list(task_channels)}")
        self.tasks = tuple(tasks)
        self.aux_tasks = tuple(aux_tasks)
        self.front_tasks = self.tasks + self.aux_tasks
        self.use_fpm = bool(fpm)
        last = len(STRIDES) - 1
        self.heads = nn.ModuleList()
        for s, (cin, ch) in enumerate(zip(in_channels, task_channels, strict=True)):
            extra = task_channels[s] if self.use_fpm and s < last else 0
            self.heads.append(nn.ModuleDict({
                t: InitialTaskHead(cin + extra, ch, _out_channels(t, num_classes))
                for t in self.front_tasks}))
        self.distill = nn.ModuleList(
            MultiModalDistillation(self.front_tasks, self.tasks, ch) for ch in task_channels)
        self.propagate = nn.ModuleList(
            FeaturePropagation(self.front_tasks, task_channels[s + 1], task_channels[s])
            for s in range(last)) if self.use_fpm else nn.ModuleList()
        self.aggregate = nn.ModuleDict({
            t: FeatureAggregation(task_channels, aggregation_channels,
                                  _out_channels(t, num_classes)) for t in self.tasks})

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int],
                with_aux: bool = True
                ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        """``(final outputs, per-scale initial predictions)``, all resized to ``size``.

        Without ``with_aux`` the initial predictions (needed only for deep supervision) are
        not computed and the list holds empty dicts.
        """
        scales = len(features)
        aux: list[dict[str, torch.Tensor]] = [{} for _ in range(scales)]
        distilled: list[dict[str, torch.Tensor]] = [{} for _ in range(scales)]
        propagated: dict[str, torch.Tensor] | None = None
        for s in range(scales - 1, -1, -1):  # coarsest (1/32) to finest (1/4)
            task_features = {}
            for t in self.front_tasks:
                x = features[s]
                if propagated is not None:
                    x = torch.cat([x, propagated[t]], dim=1)
                head = self.heads[s][t]
                task_features[t] = head.features(x)
                if with_aux:
                    aux[s][t] = finalize_prediction(t, head.predict(task_features[t]), size)
            distilled[s] = self.distill[s](task_features)
            if self.use_fpm and s > 0:
                propagated = self.propagate[s - 1](task_features, features[s - 1].shape[-2:])
        outputs = {t: finalize_prediction(t, self.aggregate[t]([d[t] for d in distilled]), size)
                   for t in self.tasks}
        return outputs, aux


class MTINet(MultiTaskModel):
    """Encoder (+ optional FPN neck) + :class:`MTINetDecoder`.

    ``forward(image)`` (``forward(image, extra)`` for the teacher) returns a dict task ->
    tensor at the input size; with ``return_aux=True`` it returns ``(outputs, aux)`` (see
    the module docstring). Attributes: ``tasks``, ``aux_tasks``, ``num_classes``,
    ``extra_channels`` (0 unless a multi-modal teacher), ``deep_supervision`` (True: the
    training loop should request and supervise ``aux``), ``config`` (set by the factory).
    """

    deep_supervision = True

    def __init__(self, encoder: MultiBackboneEncoder, tasks: Sequence[str], num_classes: int,
                 aux_tasks: Sequence[str] = (), neck: str = "none", fpn_channels: int = 256,
                 task_channels: int | Sequence[int] | None = None,
                 aggregation_channels: int = 128, fpm: bool = True,
                 extra_channels: int = 0) -> None:
        super().__init__(tasks, num_classes, extra_channels)
        self.aux_tasks: tuple[str, ...] = tuple(aux_tasks)
        self.encoder = encoder
        channels = list(encoder.out_channels)
        self.neck: nn.Module = nn.Identity()
        if neck == "fpn":
            self.neck = TwoWayFPN(channels, fpn_channels)
            channels = [fpn_channels] * len(channels)
        if task_channels is None:
            task_channels = channels
        elif isinstance(task_channels, int):
            task_channels = [task_channels] * len(channels)
        self.decoder = MTINetDecoder(channels, self.tasks, self.num_classes, list(task_channels),
                                     aggregation_channels, self.aux_tasks, fpm)

    def forward(self, image: torch.Tensor, extra: torch.Tensor | None = None, *,
                return_aux: bool = False):
        inputs = self.check_inputs(image, extra)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        outputs, aux = self.decoder(self.neck(self.encoder(*inputs)), size, with_aux=return_aux)
        return (outputs, aux) if return_aux else outputs


# ---------------------------------------------------------------- config -> model

# Keys of a full timm HRNet that its raw-branch feature model lacks (classification heads).
_HRNET_HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def create_mti_backbone(name: str, in_chans: int = 3, pretrained: str | None = None,
                        hrnet_branches: bool = True) -> Backbone:
    """A :class:`Backbone`; HRNets expose their raw branch outputs when ``hrnet_branches``.

    MTI-Net (and the imbalanced-data teacher) use HRNet's four parallel branches directly
    (18/36/72/144 channels for w18). timm's default HRNet features pass them through the
    classification "incre" modules (128..1024 channels, +1.4 M parameters per backbone and a
    much larger decoder). Any other backbone is built by :func:`create_backbone`.
    """
    import timm.models

    if not (hrnet_branches and isinstance(name, str) and timm.models.is_model(name)
            and timm.models.model_entrypoint(name).__module__ == "timm.models.hrnet"):
        return create_backbone(name, in_chans=in_chans, pretrained=pretrained)
    body = create_timm_model(name, pretrained, features_only=True, feature_location="",
                             in_chans=in_chans)
    reductions = list(body.feature_info.reduction())
    indices = [reductions.index(s) for s in STRIDES]
    channels = [int(body.feature_info.channels()[i]) for i in indices]
    backbone = Backbone(name, body, indices, channels, int(in_chans), conv_head=False)
    if pretrained and pretrained != IMAGENET:
        load_state_dict_checked(backbone.body, read_state_dict(pretrained),
                                f"pretrained weights {pretrained}",
                                ignore_unexpected=_HRNET_HEAD_PREFIXES)
    return backbone


_DECODER_DEFAULTS: dict[str, Any] = {
    "neck": "none", "task_channels": None, "aux_tasks": [], "fpm": True, "hrnet_branches": True,
}


def _decoder_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validated MTINet keyword arguments from a resolved config."""
    if cfg["neck"] not in NECKS:
        raise ModelConfigError(f"unknown model.neck {cfg['neck']!r}; choose one of {list(NECKS)}")
    aux = cfg["aux_tasks"] or []
    if isinstance(aux, str):
        aux = [aux]
    bad = [t for t in aux if t not in AUX_TASKS or t in cfg["tasks"]]
    if bad or len(set(aux)) != len(aux):
        raise ModelConfigError(
            f"model.aux_tasks {aux} must be distinct tasks from {list(AUX_TASKS)} that are not "
            f"in model.tasks {cfg['tasks']} (auxiliary tasks are predicted in the front-end only)")
    channels = cfg["task_channels"]
    ok = channels is None or (isinstance(channels, int) and not isinstance(channels, bool)
                              and channels > 0)
    if isinstance(channels, list):
        ok = len(channels) == len(STRIDES) and all(
            isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)
    if not ok:
        raise ModelConfigError(
            f"model.task_channels must be null (the encoder's channels), an integer or a list "
            f"of {len(STRIDES)} integers (strides {list(STRIDES)}), got {channels!r}")
    for key in ("fpm", "hrnet_branches"):
        if not isinstance(cfg[key], bool):
            raise ModelConfigError(f"model.{key} must be true or false, got {cfg[key]!r}")
    return {"tasks": cfg["tasks"], "num_classes": cfg["num_classes"],
            "aux_tasks": [t for t in AUX_TASKS if t in aux], "neck": cfg["neck"],
            "fpn_channels": cfg["fpn_channels"], "task_channels": channels,
            "aggregation_channels": cfg["head_channels"], "fpm": cfg["fpm"]}


def _pretrained_paths(value: Any, count: int, load_weights: bool) -> list[str | None]:
    if value is None or not load_weights:
        return [None] * count
    if isinstance(value, str):
        return [value] * count
    if isinstance(value, list) and len(value) == count and all(
            v is None or isinstance(v, str) for v in value):
        return list(value)
    raise ModelConfigError(
        f"model.pretrained must be a weight file path, null, or a list of one path (or null) "
        f"per backbone ({count}), got {value!r}")


@register_model("mtinet", {"backbones": ["hrnet_w18"], "pretrained": None,
                           "backbone_checkpoints": None, "freeze_backbones": False,
                           "fusion": DEFAULT_FUSION, **_DECODER_DEFAULTS},
                "MTI-Net: multi-scale task interaction decoder on one or several fused backbones")
def mtinet(cfg: dict[str, Any], load_weights: bool = True) -> MTINet:
    """MTI-Net on the (fused) features of ``backbones`` (one HRNet-w18 in the paper)."""
    names, checkpoints = validate_multi_backbone(cfg)
    options = _decoder_options(cfg)
    paths = _pretrained_paths(cfg["pretrained"], len(names), load_weights)
    backbones = [create_mti_backbone(n, pretrained=p, hrnet_branches=cfg["hrnet_branches"])
                 for n, p in zip(names, paths, strict=True)]
    if checkpoints is not None and load_weights:
        for backbone, path in zip(backbones, checkpoints, strict=True):
            if path is not None:
                load_backbone_weights(backbone, path)
    encoder = MultiBackboneEncoder(backbones, cfg["fusion"], frozen=cfg["freeze_backbones"])
    return MTINet(encoder, **options)


@register_model("mti_teacher", {"tasks": [SEGMENTATION, DEPTH], "backbone": "hrnet_w18",
                                "extra_backbone": None, "extra_modality": DEPTH,
                                "pretrained": None, **_DECODER_DEFAULTS},
                "imbalanced-data paper's teacher: RGB + extra-modality HRNets added (FFM), "
                "MTI-Net decoder")
def mti_teacher(cfg: dict[str, Any], load_weights: bool = True) -> MTINet:
    """The published multi-modal teacher: per-modality backbones, FFM by addition, MTI-Net."""
    extra_channels = extra_modality_channels(cfg)
    options = _decoder_options(cfg)
    (path,) = _pretrained_paths(cfg["pretrained"], 1, load_weights)
    rgb = create_mti_backbone(cfg["backbone"], pretrained=path,
                              hrnet_branches=cfg["hrnet_branches"])
    extra = create_mti_backbone(cfg["extra_backbone"] or cfg["backbone"], in_chans=extra_channels,
                                hrnet_branches=cfg["hrnet_branches"])
    encoder = MultiBackboneEncoder([rgb, extra], "add", streams=(0, 1))
    return MTINet(encoder, extra_channels=extra_channels, **options)
