"""The end-to-end demo (``mbmt-train demo``): synthetic data -> the tiny training pipeline ->
model bundle -> the perception node in an isolated network namespace, fed the recording's
val frames -> its outputs recorded to a rosbag2 and scored -> a summary. See docs/demo.md.

Modules: :mod:`~training.demo.budget` (full / ci), :mod:`~training.demo.orchestrate` (the
steps), :mod:`~training.demo.ros_session` (the ROS part, one process in the namespace),
:mod:`~training.demo.recorder` (the output recorder node), :mod:`~training.demo.bags`
(rosbag2 helpers), :mod:`~training.demo.predictions` (outputs -> ``.npz``),
:mod:`~training.demo.summary` (the final summary).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from training.demo.budget import BUDGETS, Budget, get_budget

__all__ = ["BUDGETS", "Budget", "get_budget", "run_demo"]


def run_demo(out: str | Path, budget: str = "full", device: str = "auto",
             config: str | Path | None = None, progress: bool = True,
             threads: int = 0) -> dict[str, Any]:
    """See :func:`training.demo.orchestrate.run_demo` (imported lazily: it is heavy)."""
    from training.demo.orchestrate import run_demo as _run_demo

    return _run_demo(out, budget=budget, device=device, config=config, progress=progress,
                     threads=threads)
