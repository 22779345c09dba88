"""Errors of the image code (both :class:`~mbmt_ros.errors.MbmtError`, so every console
script reports them as one line)."""
from __future__ import annotations

from mbmt_ros.errors import MbmtError

__all__ = ["ImageConversionError", "PaletteError"]


class ImageConversionError(MbmtError, ValueError):
    """An image cannot be read or written (bad size/step/length, unknown encoding, corrupt
    data)."""


class PaletteError(MbmtError, ValueError):
    """A colour palette is malformed (not [r, g, b] triples in 0..255, too few or too many)."""
