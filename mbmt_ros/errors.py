"""The package's base error: every user-facing failure derives from it (rosbags-style)."""
from __future__ import annotations

__all__ = ["MbmtError", "ModelConfigError"]


class MbmtError(Exception):
    """A failure the user can act on; the message says what is wrong and what to do."""


class ModelConfigError(MbmtError, ValueError):
    """A model configuration is invalid (unknown backbone, bad fusion, bad task list...)."""
