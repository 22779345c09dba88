"""The run folder: one sub-folder per stage, completion markers and the copied config.

Layout (``DIR`` defaults to ``runs/<config name>``)::

    DIR/config.yaml              the pipeline config as run (resolved, for people to read)
    DIR/results.md, results.csv  the comparison table written by the evaluate stage
    DIR/data/                    synthetic data when the config generates it
    DIR/<stage>/done.json        present only once the stage finished (its artefacts are complete)
    DIR/<stage>/fingerprint.json the fingerprint the folder's contents were made under
    DIR/<stage>.stale-<time>/    an earlier version of the stage, set aside when it went stale
    DIR/<stage>/model.safetensors  final weights of a training stage (``save_model`` format)
    DIR/<stage>/checkpoints/last.ckpt  Lightning resume state (atomic; ``weights_only`` loads)
    DIR/<stage>/logs/            TensorBoard event files
    DIR/<stage>/metrics.json     validation metrics (``score`` keys), plots/ PNG grids

A stage is complete exactly when its ``done.json`` exists; it is written last and atomically, so a
killed process leaves either a finished stage or one that is re-run (resuming its checkpoint).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mbmt_ros.io import atomic_write_json, atomic_write_text
from training.errors import ConfigError

__all__ = ["RunDir", "DONE_FILE", "MODEL_FILE", "FINGERPRINT_FILE", "config_digest"]

DONE_FILE = "done.json"
MODEL_FILE = "model.safetensors"
FINGERPRINT_FILE = "fingerprint.json"


def config_digest(obj: Any) -> str:
    """A short stable hash of a JSON-able object (a stage's resolved config)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class RunDir:
    """Paths and completion markers of one pipeline run."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def stage_dir(self, stage: str, create: bool = True) -> Path:
        path = self.root / stage
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def model_path(self, stage: str) -> Path:
        return self.root / stage / MODEL_FILE

    def checkpoint_dir(self, stage: str) -> Path:
        return self.root / stage / "checkpoints"

    def last_checkpoint(self, stage: str) -> Path | None:
        path = self.checkpoint_dir(stage) / "last.ckpt"
        return path if path.is_file() else None

    def is_done(self, stage: str) -> bool:
        return (self.root / stage / DONE_FILE).is_file()

    def read_done(self, stage: str) -> dict[str, Any]:
        path = self.root / stage / DONE_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"stage '{stage}' has not finished: {path} is missing; run that stage first"
            ) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is corrupt ({exc}); delete it to re-run the stage") from exc

    def mark_done(self, stage: str, kind: str, digest: str, **info: Any) -> None:
        """Write ``done.json`` (atomically, last) - the stage's artefacts must already be complete.

        ``run_id`` is new on every run, so stages that read this one see when it was re-run.
        """
        record = {"stage": stage, "kind": kind, "config_digest": digest,
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "run_id": uuid.uuid4().hex, **info}
        atomic_write_json(self.root / stage / DONE_FILE, record)

    def read_fingerprint(self, stage: str) -> str | None:
        """The fingerprint recorded when the stage's folder was (last) started, if any."""
        try:
            value = json.loads((self.root / stage / FINGERPRINT_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return value.get("fingerprint") if isinstance(value, dict) else None

    def write_fingerprint(self, stage: str, fingerprint: str, **info: Any) -> None:
        atomic_write_json(self.stage_dir(stage) / FINGERPRINT_FILE,
                          {"fingerprint": fingerprint, **info})

    def set_aside(self, stage: str) -> Path | None:
        """Rename the stage's folder to ``<stage>.stale-<UTC time>`` (kept, never deleted)."""
        folder = self.root / stage
        if not folder.exists():
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.root / f"{stage}.stale-{stamp}"
        n = 1
        while target.exists():
            n += 1
            target = self.root / f"{stage}.stale-{stamp}-{n}"
        os.replace(folder, target)
        return target

    def clear_done(self, stage: str) -> None:
        (self.root / stage / DONE_FILE).unlink(missing_ok=True)

    def require_model(self, stage: str, purpose: str) -> Path:
        """The finished weights of ``stage``, or a ConfigError saying which stage to run."""
        path = self.model_path(stage)
        if not self.is_done(stage) or not path.is_file():
            raise ConfigError(
                f"{purpose} needs the finished weights of stage '{stage}' ({path} is missing); "
                f"run that stage first (mbmt-train pipeline runs stages in order)"
            )
        return path

    def write_config(self, config: dict[str, Any]) -> Path:
        """Copy the resolved pipeline config into the run folder (``config.yaml``)."""
        path = self.root / "config.yaml"
        atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
        return path
