"""Newest-frame hand-over between the subscription callback and one inference thread.

The callback only calls :meth:`LatestSlot.put` (constant time); the worker thread takes the
newest frame, so frames that arrive while the backend is busy replace each other and are
counted as dropped instead of queueing without bound.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LatestSlot", "InferenceWorker"]

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-element mailbox that keeps only the newest item."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> bool:
        """Store ``item``; True when it replaced an item nobody took (a dropped frame)."""
        with self._cond:
            dropped = self._item is not None
            self._item = item
            self._cond.notify()
        return dropped

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item (removing it), or None after ``timeout`` or once closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake any waiting :meth:`take`; later takes return at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> bool:
        """Discard a waiting item; True if there was one."""
        with self._cond:
            had, self._item = self._item is not None, None
            return had


class InferenceWorker(Generic[T]):
    """A daemon thread calling ``process(item)`` for the newest item of a :class:`LatestSlot`.

    ``process`` must handle its own errors; anything it raises goes to ``on_error`` and the
    loop keeps running (one bad frame never stops the node).
    """

    def __init__(self, slot: LatestSlot[T], process: Callable[[T], None],
                 on_error: Callable[[BaseException], None], name: str = "mbmt-inference") -> None:
        self._slot = slot
        self._process = process
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the loop to end after the current frame and wait; True if it ended."""
        self._stop.set()
        self._slot.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._slot.take(timeout=0.5)
            if item is None or self._stop.is_set():
                continue
            try:
                self._process(item)
            except Exception as exc:  # keep serving frames; the node reports it
                self._on_error(exc)
