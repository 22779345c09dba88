"""Equal weighting: the plain sum of the task losses (every weight 1)."""
from __future__ import annotations

from collections.abc import Iterable

import torch

from training.weighting.base import Weighting, register_weighting

__all__ = ["EqualWeighting"]


@register_weighting("equal")
class EqualWeighting(Weighting):
    """Total loss = sum of the present tasks' unweighted losses."""

    def __init__(self, tasks: Iterable[str]) -> None:
        super().__init__(tasks)

    def task_weight(self, index: int, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def weights(self) -> dict[str, float]:
        return {t: 1.0 for t in self.tasks}
