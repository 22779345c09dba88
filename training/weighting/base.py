"""The loss-weighting interface and its name registry (LibMTL style).

A weighting method is one small module defining one :class:`Weighting` subclass,
registered under a name with :func:`register_weighting`. The trainer only ever calls the
interface below, so it needs no method-specific branches:

- ``forward(losses)``: weighted sum of the step's unweighted per-task losses (tasks
  missing from ``losses`` - no labelled sample in the batch - are skipped);
- ``epoch_end(mean_unweighted_losses)``: once per training epoch, with each task's mean
  unweighted loss over the epoch (methods such as DWA update their weights here);
- ``weights()``: the current multiplier per task, for logging;
- ``state_dict()`` / ``load_state_dict()``: everything needed to resume (buffers and
  learned parameters); methods with parameters (``uncertainty``) must be given to the
  optimiser together with the model's parameters.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from mbmt_ros.tasks import validate_tasks
from training.errors import ConfigError, TrainingError

__all__ = ["Weighting", "register_weighting", "make_weighting", "available_weightings"]

_REGISTRY: dict[str, type[Weighting]] = {}


class Weighting(nn.Module):
    """Base class: holds the task list; subclasses implement :meth:`task_weight`."""

    #: the registry name, set by :func:`register_weighting`
    name: str = ""

    def __init__(self, tasks: Iterable[str]) -> None:
        super().__init__()
        try:
            self.tasks: tuple[str, ...] = validate_tasks(list(tasks))
        except ValueError as exc:
            raise ConfigError(f"loss weighting: {exc}") from exc

    def task_weight(self, index: int, loss: torch.Tensor) -> torch.Tensor:
        """The weighted term of task ``self.tasks[index]`` for its unweighted ``loss``."""
        raise NotImplementedError

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of ``losses`` (task -> scalar tensor); missing tasks are skipped.

        With no loss at all the result is a zero scalar without gradient: the caller
        should skip that optimisation step.
        """
        unknown = [t for t in losses if t not in self.tasks]
        if unknown:
            raise TrainingError(
                f"losses for task(s) {unknown} that the weighting was not built for "
                f"(tasks {list(self.tasks)})"
            )
        terms = [self.task_weight(i, losses[t]) for i, t in enumerate(self.tasks) if t in losses]
        if not terms:
            return torch.zeros(())
        return torch.stack(terms).sum()

    def epoch_end(self, mean_unweighted_losses: Mapping[str, float]) -> None:
        """Called once per epoch with each task's epoch-mean unweighted loss (default: no-op)."""

    def weights(self) -> dict[str, float]:
        """The current multiplier of each task's loss."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}"


def register_weighting(name: str) -> Callable[[type[Weighting]], type[Weighting]]:
    """Class decorator: make a :class:`Weighting` subclass available as ``name``."""

    def decorate(cls: type[Weighting]) -> type[Weighting]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"loss weighting {name!r} is registered twice")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return decorate


def available_weightings() -> list[str]:
    """Names accepted by :func:`make_weighting`."""
    return sorted(_REGISTRY)


def make_weighting(name: str, tasks: Iterable[str], **options: object) -> Weighting:
    """Build the weighting method ``name`` for ``tasks`` with method ``options``.

    Unknown names and options are :class:`~training.errors.ConfigError` s.
    """
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(
            f"unknown loss weighting {name!r}; choose one of {available_weightings()}"
        )
    try:
        return cls(tasks, **options)
    except TypeError as exc:
        raise ConfigError(f"loss weighting {name!r}: bad options {options}: {exc}") from exc
