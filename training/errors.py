"""Errors the training module reports to users (printed without a traceback by the CLI)."""
from __future__ import annotations

from mbmt_ros.errors import CheckpointError, MbmtError

__all__ = ["MbmtError", "ConfigError", "DataError", "CheckpointError", "TrainingError",
           "ExportError"]


class ConfigError(MbmtError, ValueError):
    """A configuration file or value is invalid."""


class DataError(MbmtError, ValueError):
    """A dataset, manifest, bag or sample file is missing or malformed."""


class TrainingError(MbmtError, RuntimeError):
    """Training cannot continue (e.g. non-finite loss)."""


class ExportError(MbmtError, RuntimeError):
    """The model cannot be exported, or the exported graph disagrees with PyTorch."""
