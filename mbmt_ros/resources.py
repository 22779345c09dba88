"""Find the package's data files (``config/``, ``launch/``, ``scripts/``) wherever it is installed.

The files live at the top of the source tree and are installed by ``setup.py`` as
``share/mbmt_ros/...`` data files (``pip install .``, ``colcon build``). :func:`share_file`
looks, in order, in the source tree (a checkout or an editable install), in the
``share/mbmt_ros`` of the installation prefix that holds this package (a venv, ``--user``,
a colcon ``install/mbmt_ros``), in ``sys.prefix`` and, on a ROS machine, in the ament index.
So ``mbmt-train demo`` and ``--config config/train/tiny.yaml`` work from any directory.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mbmt_ros.errors import MbmtError

__all__ = ["PACKAGE", "ResourceNotFoundError", "share_dirs", "share_file"]

PACKAGE = "mbmt_ros"


class ResourceNotFoundError(MbmtError, FileNotFoundError):
    """A data file of the package (config, launch or script) is not installed."""


def _prefix_share_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent  # .../site-packages/mbmt_ros or <checkout>/mbmt_ros
    dirs = [here.parent]  # the checkout itself
    # <prefix>/lib/pythonX.Y/site-packages/mbmt_ros -> <prefix>/share/mbmt_ros
    dirs += [parent / "share" / PACKAGE for parent in here.parents[1:5]]
    dirs.append(Path(sys.prefix) / "share" / PACKAGE)
    return dirs


def _ament_share_dir() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # PackageNotFoundError and friends: not in the ament index
        return None


def share_dirs() -> list[Path]:
    """The folders searched for data files, in order (existing ones only, no duplicates)."""
    found: list[Path] = []
    for folder in [*_prefix_share_dirs(), _ament_share_dir()]:
        if folder is not None and (folder / "config").is_dir() and folder not in found:
            found.append(folder)
    return found


def share_file(*parts: str) -> Path:
    """The installed data file ``parts`` (e.g. ``share_file("config", "train", "tiny.yaml")``).

    Raises :class:`ResourceNotFoundError` naming the folders searched when it is missing.
    """
    searched = share_dirs()
    for folder in searched:
        candidate = folder.joinpath(*parts)
        if candidate.exists():
            return candidate
    where = ", ".join(str(d) for d in searched) or "no installed share/mbmt_ros folder"
    raise ResourceNotFoundError(
        f"{'/'.join(parts)} is not installed (searched {where}); reinstall mbmt_ros with "
        "`pip install .` or `colcon build` from a complete checkout")
