"""The bundle graph as a torch module: uint8 NHWC RGB in, the bundle's named outputs out.

Shared by the exporter (it is what ``model.onnx`` contains) and the torch backend (so both
compute exactly the same thing). Imports torch: only the torch backend and the training
side import this module.

Only operations every TensorRT version since 8.6 parses are used: Cast, Transpose, Mul/Sub,
the model's own convolutions / resizes, ReduceMax, Exp, ReduceSum, Reciprocal, ArgMax and Clip
(depth >= 0). The uint8 input feeds a Cast directly, and the exported graphs are checked by
:mod:`mbmt_ros.runtime.trt_readiness`.
"""
from __future__ import annotations

import torch
from torch import nn

from mbmt_ros.tasks import DEPTH, NORMALS, SEGMENTATION, TASKS, UINT8_SCALE, UINT8_SHIFT

__all__ = ["BundleGraph"]


class BundleGraph(nn.Module):
    """Wraps a multi-task model for deployment.

    ``forward(image)`` takes ``(N, H, W, 3)`` uint8 RGB and returns a tuple in the bundle's
    fixed output order (for the tasks in ``tasks``): segmentation ``(N, H, W)`` int32 class
    ids, segmentation_confidence ``(N, H, W)`` float32 (max softmax probability), depth
    ``(N, H, W)`` float32 metres (clamped to >= 0: never negative), normals
    ``(N, 3, H, W)`` float32.

    With ``dtype=torch.float16`` the network runs in half precision (the model is converted
    by the caller) while the inputs and outputs keep the contract's dtypes.
    """

    def __init__(self, model: nn.Module, tasks: tuple[str, ...] | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model = model
        own = tuple(getattr(model, "tasks", TASKS))
        self.tasks = tuple(t for t in TASKS if t in (tasks or own))
        missing = [t for t in self.tasks if t not in own]
        if missing:
            raise ValueError(f"the model has no {missing} output (its tasks are {list(own)})")
        self.dtype = dtype
        # (x / 255 - mean) / std, folded into two constants (mbmt_ros.tasks.UINT8_SCALE)
        self.register_buffer("scale", torch.tensor(UINT8_SCALE).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("shift", torch.tensor(UINT8_SHIFT).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Cast first: TensorRT needs a uint8 network input to feed a Cast directly (a
        # Transpose on uint8 before the cast leaves TensorRT 10 with an empty network).
        x = image.to(torch.float32).permute(0, 3, 1, 2) * self.scale + self.shift
        out = self.model(x.to(self.dtype))
        results: list[torch.Tensor] = []
        if SEGMENTATION in self.tasks:
            logits = out[SEGMENTATION].to(torch.float32)
            top = logits.amax(dim=1, keepdim=True)
            # max softmax probability = 1 / sum(exp(l - max)); no full softmax needed
            confidence = torch.reciprocal(torch.exp(logits - top).sum(dim=1))
            results += [logits.argmax(dim=1).to(torch.int32), confidence]
        if DEPTH in self.tasks:
            # published depth is never negative (REP 118 metres): clamped in the graph
            results.append(torch.clamp(out[DEPTH][:, 0].to(torch.float32), min=0.0))
        if NORMALS in self.tasks:
            results.append(out[NORMALS].to(torch.float32))
        return tuple(results)
