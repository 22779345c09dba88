"""The publish stage after the inference thread: frame N-1's outputs are built and published
while frame N is predicted.

The inference thread hands each predicted frame over with :meth:`PublishStage.put`; one
publish thread takes them in the order they were handed over (so outputs leave in stamp
order) and runs ``publish(item)`` once per item (never twice). At most one item waits: when
the publish thread is still busy with the previous one, ``put`` blocks until it takes it, so
a slow consumer path slows inference down instead of building a backlog (the newest-frame
policy stays with :class:`mbmt_ros.ros.inference_worker.LatestSlot` before inference).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PublishStage"]

T = TypeVar("T")


class PublishStage(Generic[T]):
    """A daemon thread running ``publish(item)`` for each handed-over item, in order.

    ``publish`` handles its own errors; anything it raises goes to ``on_error`` and the
    stage keeps running. :meth:`stop` publishes an item already handed over, then ends.
    """

    def __init__(self, publish: Callable[[T], None], on_error: Callable[[BaseException], None],
                 name: str = "mbmt-publish") -> None:
        self._publish = publish
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: list[T] = []  # at most one item
        self._closed = False
        self._busy = False
        self.handed_over = 0  # items accepted by put
        self.published = 0  # items whose publish returned (or raised)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Hand ``item`` over; blocks while another item still waits. False (item not taken)
        once the stage is stopped or after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or not self._pending, timeout):
                return False
            if self._closed:
                return False
            self._pending.append(item)
            self.handed_over += 1
            self._cond.notify_all()
            return True

    def idle(self) -> bool:
        """True when nothing waits and nothing is being published."""
        with self._cond:
            return not self._pending and not self._busy

    def stop(self, timeout: float = 10.0) -> bool:
        """Refuse further items, let the thread publish what was handed over, wait for it;
        True if it ended."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._pending)
                if not self._pending:  # closed and drained
                    return
                item = self._pending.pop()
                self._busy = True
                self._cond.notify_all()  # room for the next put
            try:
                self._publish(item)
            except Exception as exc:  # keep publishing; the node reports it
                self._on_error(exc)
            finally:
                with self._cond:
                    self._busy = False
                    self.published += 1
                    self._cond.notify_all()
