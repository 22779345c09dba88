"""The package's base error: every user-facing failure derives from it (rosbags-style)."""
from __future__ import annotations

__all__ = ["MbmtError", "ModelConfigError", "CheckpointError", "ModelInputError"]


class MbmtError(Exception):
    """A failure the user can act on; the message says what is wrong and what to do."""


class ModelConfigError(MbmtError, ValueError):
    """A model configuration is invalid (unknown backbone, bad fusion, bad task list...)."""


class CheckpointError(MbmtError, ValueError):
    """A checkpoint is missing, corrupt or of a different architecture than expected."""


class ModelInputError(MbmtError, ValueError):
    """A tensor given to a model has the wrong shape or a required input is missing."""
