"""Parameter and FLOP table of a model at a given input size.

``gflops`` counts **multiply-accumulates** (MACs) in units of 1e9: it is what the
MBMT-Net paper (and most vision papers / ptflops / thop) call "FLOPs".
``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per MAC, so its total is
halved. Only convolutions and matrix products are counted (normalisation, activations,
interpolation and element-wise fusion are not), as in the paper's tools.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["count_parameters", "model_summary"]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def model_summary(model: nn.Module, input_size: Sequence[int]) -> dict[str, Any]:
    """``params_total``, ``params_trainable``, ``gflops`` (GMACs) and ``outputs``.

    ``input_size`` is ``(H, W)``; the model is run once on a zero batch of one image (and a
    zero extra input for a multi-modal teacher). ``outputs`` maps task -> output shape.
    ``params_by_part`` splits the parameters by the model's top-level children.
    """
    from torch.utils.flop_counter import FlopCounterMode

    height, width = (int(v) for v in input_size)
    param = next(model.parameters())
    inputs = [torch.zeros(1, 3, height, width, device=param.device, dtype=param.dtype)]
    extra = int(getattr(model, "extra_channels", 0) or 0)
    if extra:
        inputs.append(torch.zeros(1, extra, height, width, device=param.device, dtype=param.dtype))
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            outputs = model(*inputs)
    finally:
        model.train(was_training)
    return {
        "input_size": [height, width],
        "params_total": count_parameters(model),
        "params_trainable": count_parameters(model, trainable_only=True),
        "gflops": counter.get_total_flops() / 2 / 1e9,
        "outputs": {task: list(out.shape) for task, out in outputs.items()},
        "params_by_part": {name: count_parameters(child)
                           for name, child in model.named_children()},
    }
