"""The demo's budgets: how much data and training each one spends.

``full`` is the README's main job (the ``tiny`` pipeline config on twice its data and epochs:
about 5 minutes on 2 CPU cores, well inside the 15-minute goal); ``ci`` is the same entry
point, the same stages and the same code paths on less data and fewer epochs, for the test
that proves the main command works (1-3 minutes).
A budget is a list of ``--set KEY=VALUE`` overrides of the pipeline config (see
``training.stages.options``), so a budget never needs its own config file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Budget", "BUDGETS", "get_budget"]


@dataclass(frozen=True)
class Budget:
    """One demo budget.

    ``overrides``: ``--set`` arguments for ``mbmt-train pipeline``; ``replay_rate``: the
    speed factor of ``mbmt-replay`` (the recording is 10 Hz, so 1.0 replays at 10 Hz).
    """

    name: str
    overrides: tuple[str, ...] = field(default_factory=tuple)
    replay_rate: float = 1.0


BUDGETS: dict[str, Budget] = {
    # 160 frames (120 train / 40 val), 10 epochs (teacher 20), the imbalanced split scaled
    # with the data (all depth, a quarter with segmentation): ~5 minutes on 2 quiet CPU
    # cores, enough for the teacher to be confident on some pixels (pseudo labels exist)
    "full": Budget("full", overrides=(
        "data.synth.count=160",
        "train.epochs=10",
        "stages.teacher.train.epochs=20",
        "stages.split.depth=120",
        "stages.split.segmentation=30",
    )),
    # 40 frames (30 train / 10 val), 1 epoch (teacher 2), a split that fits 30 train frames
    "ci": Budget("ci", overrides=(
        "data.synth.count=40",
        "train.epochs=1",
        "stages.teacher.train.epochs=2",
        "stages.split.depth=30",
        "stages.split.segmentation=10",
    ), replay_rate=2.0),
}


def get_budget(name: str) -> Budget:
    """The budget called ``name`` (``full`` or ``ci``)."""
    from training.errors import ConfigError

    try:
        return BUDGETS[name]
    except KeyError:
        raise ConfigError(f"unknown demo budget {name!r}; use one of {sorted(BUDGETS)}") from None
