"""Dynamic Weight Average (Liu, Johns, Davison, "End-to-End Multi-Task Learning with
Attention", CVPR 2019 - MTAN).

Weights are 1 for the first two epochs. From epoch ``t >= 2`` (0-based) on, with
``L_k(t)`` the epoch-mean *unweighted* training loss of task ``k``::

    w_k = L_k(t-1) / L_k(t-2)
    lambda_k = K * exp(w_k / T) / sum_i exp(w_i / T)

with ``K`` the number of tasks and temperature ``T`` (2.0 by default). The trainer calls
``epoch_end`` with epoch ``t``'s mean losses; the weights then hold for epoch ``t + 1``.
A task without a finite, positive loss in either of the two previous epochs (e.g. no
labelled sample in an epoch) gets the neutral ratio ``w_k = 1``. With DDP the trainer
should average the epoch means across ranks before calling ``epoch_end`` so every rank
computes the same weights.

The loss history and current weights are buffers, so ``state_dict`` resumes them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from training.errors import ConfigError
from training.weighting.base import Weighting, register_weighting

__all__ = ["DynamicWeightAverage"]


@register_weighting("dwa")
class DynamicWeightAverage(Weighting):
    """DWA with temperature ``temperature`` (MTAN's ``T``)."""

    def __init__(self, tasks: Iterable[str], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
                and temperature > 0):
            raise ConfigError(f"dwa temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        k = len(self.tasks)
        # row 0: L(t-2), row 1: L(t-1); NaN = not seen yet
        self.register_buffer("history", torch.full((2, k), float("nan"), dtype=torch.float64))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("lambdas", torch.ones(k, dtype=torch.float64))

    def task_weight(self, index: int, loss: torch.Tensor) -> torch.Tensor:
        return self.lambdas[index].to(loss.device, loss.dtype) * loss

    def epoch_end(self, mean_unweighted_losses: Mapping[str, float]) -> None:
        current = torch.tensor(
            [float(mean_unweighted_losses.get(t, float("nan"))) for t in self.tasks],
            dtype=torch.float64, device=self.history.device,
        )
        self.history[0] = self.history[1]
        self.history[1] = current
        self.epochs_seen += 1
        if int(self.epochs_seen) < 2:
            self.lambdas.fill_(1.0)
            return
        older, newer = self.history[0], self.history[1]
        usable = torch.isfinite(older) & torch.isfinite(newer) & (older > 0)
        ratio = torch.where(usable, newer / torch.where(usable, older, 1.0), 1.0)
        self.lambdas.copy_(len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0))

    def weights(self) -> dict[str, float]:
        return {t: float(w) for t, w in zip(self.tasks, self.lambdas.tolist(), strict=True)}

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, temperature={self.temperature}"
