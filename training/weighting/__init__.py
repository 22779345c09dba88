"""Loss weighting methods chosen by name: ``make_weighting("dwa", tasks, temperature=2.0)``.

One module per method (``equal``, ``dwa``, ``uncertainty``); see :mod:`.base` for the
interface the trainer uses.
"""
from __future__ import annotations

from training.weighting import dwa, equal, mtunet, uncertainty  # noqa: F401  (register the methods)
from training.weighting.base import (
    Weighting,
    available_weightings,
    make_weighting,
    register_weighting,
)
from training.weighting.dwa import DynamicWeightAverage
from training.weighting.equal import EqualWeighting
from training.weighting.uncertainty import UncertaintyWeighting

__all__ = [
    "Weighting", "make_weighting", "register_weighting", "available_weightings",
    "EqualWeighting", "DynamicWeightAverage", "UncertaintyWeighting",
]
