"""The capture folder and its single owner.

One capture folder takes one writer: a node removes the hidden partial segments it finds at
start (those of a killed earlier run), so two nodes on one folder would delete each other's
open segment. :class:`FolderLock` is an exclusive ``flock`` on ``<folder>/.mbmt_capture.lock``,
which holds the owner's pid and host name for the error message. The kernel drops the lock
when its process dies, so the lock file of a killed node is *stale*, not held: the next node
takes it over. ``flock`` locks belong to an open file, so two nodes in one process exclude
each other too. ROS-free (part of ``mbmt_ros.ros.capture``).
"""
from __future__ import annotations

import fcntl
import os
import platform
from pathlib import Path

from mbmt_ros.io import remove_stale_temporaries
from mbmt_ros.ros.errors import CaptureError

__all__ = ["LOCK_NAME", "FolderLock", "claim_directory", "prepare_directory"]

LOCK_NAME = ".mbmt_capture.lock"


class FolderLock:
    """Exclusive ownership of a capture folder (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self._fd: int | None = None
        #: the ``pid host`` line of a stale lock that :meth:`acquire` took over, else ""
        self.took_over = ""

    def acquire(self) -> None:
        """Take the lock; CaptureError naming the folder and the owner when another process
        (or another node of this one) holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read(fd) or "unknown"
                os.close(fd)
                raise CaptureError(
                    f"capture.dir={str(self.folder)!r} is in use by another perception node "
                    f"(pid {owner}, lock file {self.path}); give each node its own "
                    "capture.dir") from None
            except BaseException:
                os.close(fd)
                raise
            try:  # the previous owner may have removed the file between our open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read(fd)
        me = f"{os.getpid()} on {platform.node()}"
        self.took_over = previous if previous and previous != me else ""
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{me}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: nobody has it open and locked
        finally:
            os.close(fd)


def _read(fd: int) -> str:
    return os.pread(fd, 256, 0).decode("utf-8", "replace").strip()


def claim_directory(directory: str | os.PathLike[str]) -> tuple[Path, FolderLock]:
    """Make the capture folder (created if missing), take its lock and remove the partial
    segments of a killed earlier run; CaptureError (one line, with the fix) when the
    ``rosbags`` package is missing, the folder is unusable or another node owns it."""
    try:
        import rosbags.rosbag2  # noqa: F401
    except ImportError as exc:
        raise CaptureError("capture.enabled needs the rosbags package: pip install rosbags "
                           "(or mbmt_ros[capture])") from exc
    root = Path(directory).expanduser()
    lock = FolderLock(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK | os.X_OK):
            raise PermissionError(f"{root} is not writable")
        lock.acquire()
    except OSError as exc:
        raise CaptureError(f"capture.dir={str(directory)!r} cannot be used: {exc}; "
                           "set capture.dir to a writable folder") from exc
    try:
        remove_stale_temporaries(root)  # only now: nobody else writes here
    except OSError as exc:
        lock.release()
        raise CaptureError(f"capture.dir={str(directory)!r} cannot be used: {exc}; "
                           "set capture.dir to a writable folder") from exc
    return root, lock


def prepare_directory(directory: str | os.PathLike[str]) -> Path:
    """Check that capturing can work (see :func:`claim_directory`; the lock is released
    again): the node calls it at configure, to refuse an unusable capture.dir early."""
    root, lock = claim_directory(directory)
    lock.release()
    return root
