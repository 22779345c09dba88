"""MT-UNet (the MT-UNet paper: "End-to-End Multi-Task Learning Driven by a Novel Task-Specific
Feature Learning"): a densely connected U-Net encoder shared by the tasks and one
attention decoder per task, with cross-task skip connections between the decoders.

Layout for base width ``b`` (64 in the paper)::

    encoder: 4 dense blocks (b, 2b, 4b, 8b), each followed by dropout + 2x2 max pooling
    bottleneck: two conv layers (16b) + 2x2 transposed conv (16b, back to 1/8 resolution)
    decoder per task: 4 attention blocks (8b, 4b, 2b, b); block j sees the upsampled output
        of block j-1 and encoder block (5 - j)'s skip; blocks 1-3 end in a 2x2 transposed
        conv that halves the channels (as in U-Net). Cross-task skips: block 3 of every task also sees the (upsampled) block-2
        output of every other task (the paper's "block 2 of task 1 -> block 3 of task 2 and
        vice versa", generalised to any number of tasks).
    head per task: 1x1 conv to the task's channels.

The paper's learned, loss-variance-normalised weighting (its Eq. 5) is the ``mtunet``
loss weighting (``training.weighting.mtunet``), chosen in the training config.
Inputs of any size are zero-padded (in normalised space, i.e. to the mean colour) to a
multiple of 16 and the outputs cropped back, so every output has the input's size.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelConfigError
from ..tasks import NORMALS
from .base import MultiTaskModel
from .factory import register_model
from .mtunet_blocks import AttentionDecoderBlock, Bottleneck, DenseEncoderBlock
from .task_heads import task_output_channels

__all__ = ["MTUNet", "mtunet", "CROSS_FROM", "CROSS_TO"]

#: Encoder / decoder blocks (max-pooling steps): inputs are padded to a multiple of 2**4.
_BLOCKS = 4
#: Cross-task skips run from decoder block 2 (1-based) of one task to block 3 of the others.
CROSS_FROM, CROSS_TO = 2, 3


class MTUNet(MultiTaskModel):
    """Dense U-Net encoder + per-task attention decoders with cross-task skips.

    ``forward(image)`` returns a dict task -> tensor at the input size (``segmentation``
    logits, ``depth``, unit ``normals``). Attributes: ``tasks``, ``num_classes``,
    ``cross_talk``, ``config`` (set by the factory).
    """

    def __init__(self, tasks: Sequence[str], num_classes: int, base_channels: int = 64,
                 dropout: float = 0.1, cross_talk: bool = True) -> None:
        super().__init__(tasks, num_classes)
        self.cross_talk = bool(cross_talk) and len(self.tasks) > 1
        widths = [base_channels * 2 ** i for i in range(_BLOCKS)]
        blocks, in_ch = [], 3
        for width in widths:
            blocks.append(DenseEncoderBlock(in_ch, width))
            in_ch = blocks[-1].dense_channels
        self.encoder = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.MaxPool2d(2)
        latent = 2 * widths[-1]
        self.bottleneck = Bottleneck(in_ch, latent, latent)
        self.decoders = nn.ModuleDict()
        for task in self.tasks:
            decoder, up_ch = nn.ModuleList(), latent
            for j in range(_BLOCKS):  # 0-based; paper block = j + 1
                width = widths[_BLOCKS - 1 - j]
                cross_ch = 0
                if self.cross_talk and j + 1 == CROSS_TO:
                    cross_ch = (len(self.tasks) - 1) * up_ch
                next_ch = widths[_BLOCKS - 2 - j] if j < _BLOCKS - 1 else 0
                decoder.append(AttentionDecoderBlock(up_ch + width + cross_ch, width, next_ch))
                up_ch = next_ch
            self.decoders[task] = decoder
        self.heads = nn.ModuleDict({
            t: nn.Conv2d(widths[0], task_output_channels(t, self.num_classes), 1)
            for t in self.tasks})

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_inputs(image)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        multiple = 2 ** _BLOCKS
        x = F.pad(image, (0, (-width) % multiple, 0, (-height) % multiple))
        skips = []
        for block in self.encoder:
            skip, dense = block(x)
            skips.append(skip)
            x = self.pool(self.dropout(dense))
        latent = self.bottleneck(x)
        ups: dict[str, torch.Tensor] = {t: latent for t in self.tasks}
        features: dict[str, torch.Tensor] = {}
        for j in range(_BLOCKS):
            new_ups = {}
            for t in self.tasks:
                inputs = [ups[t], skips[_BLOCKS - 1 - j]]
                if self.cross_talk and j + 1 == CROSS_TO:
                    # ups holds every task's upsampled block-CROSS_FROM output here
                    inputs += [ups[other] for other in self.tasks if other != t]
                features[t], new_ups[t] = self.decoders[t][j](inputs)
            ups = new_ups
        outputs = {}
        for t in self.tasks:
            out = self.heads[t](features[t])[..., :height, :width]
            if t == NORMALS:
                out = F.normalize(out, p=2.0, dim=1, eps=1e-6)
            outputs[t] = out
        return outputs


@register_model("mtunet", {"base_channels": 64, "dropout": 0.1, "cross_talk": True},
                "MT-UNet: dense U-Net encoder, attention decoders with cross-task skips")
def mtunet(cfg: dict[str, Any], load_weights: bool = True) -> MTUNet:
    """MT-UNet from config (``base_channels``, ``dropout``, ``cross_talk``); no backbone
    weights to load - the paper trains it from scratch."""
    base = cfg["base_channels"]
    if isinstance(base, bool) or not isinstance(base, int) or base < 1:
        raise ModelConfigError(f"model.base_channels must be an integer >= 1, got {base!r}")
    p = cfg["dropout"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ModelConfigError(f"model.dropout must be a probability in [0, 1), got {p!r}")
    if not isinstance(cfg["cross_talk"], bool):
        raise ModelConfigError(f"model.cross_talk must be true or false, got {cfg['cross_talk']!r}")
    return MTUNet(cfg["tasks"], cfg["num_classes"], base, float(p), cfg["cross_talk"])
