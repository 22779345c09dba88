"""Homoscedastic-uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018).

Each task has a learned log-variance ``s_k = log sigma_k^2`` (initial value
``init_log_var``, 0 by default). Following the paper's two likelihoods:

- regression tasks (``depth``, ``normals``; Gaussian likelihood):
  ``0.5 * exp(-s_k) * L_k + 0.5 * s_k``  (``1/(2 sigma^2) L + log sigma``);
- classification (``segmentation``; softmax with temperature ``sigma^2``):
  ``exp(-s_k) * L_k + 0.5 * s_k``  (``1/sigma^2 L + log sigma``).

Learning ``s`` rather than ``sigma`` keeps the division stable. The log-variances are
``nn.Parameter`` s: the trainer must optimise ``weighting.parameters()`` together with the
model's. A task missing from a step's losses adds nothing (its ``s_k`` gets a zero
gradient). ``weights()`` reports the effective multipliers ``c_k * exp(-s_k)``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from mbmt_ros.tasks import SEGMENTATION
from training.weighting.base import Weighting, register_weighting

__all__ = ["UncertaintyWeighting", "CLASSIFICATION_TASKS"]

#: Tasks that use the classification form; every other task is a regression.
CLASSIFICATION_TASKS = frozenset({SEGMENTATION})


@register_weighting("uncertainty")
class UncertaintyWeighting(Weighting):
    """Kendall et al. weighting with one learned log-variance per task."""

    def __init__(self, tasks: Iterable[str], init_log_var: float = 0.0) -> None:
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init_log_var)))
        factors = [1.0 if t in CLASSIFICATION_TASKS else 0.5 for t in self.tasks]
        self.register_buffer("factors", torch.tensor(factors), persistent=False)

    def task_weight(self, index: int, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[index]
        return self.factors[index] * torch.exp(-s) * loss + 0.5 * s

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum; every log-variance stays in the graph (zero gradient for tasks
        missing from the step) so DDP does not see unused parameters."""
        return super().forward(losses) + 0.0 * self.log_vars.sum()

    def weights(self) -> dict[str, float]:
        with torch.no_grad():
            w = self.factors * torch.exp(-self.log_vars)
        return {t: float(v) for t, v in zip(self.tasks, w.tolist(), strict=True)}
