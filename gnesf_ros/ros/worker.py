"""Bounded queue + worker thread: the executor only enqueues, workers do the work.

Pure Python (no rclpy): the node supplies callables. Drop policy: when full, the oldest item that
is not ``pinned`` (control items such as a flush request) is dropped and handed to ``on_drop``
(default: counted as ``queue_full``), so the queue follows the newest data.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any


class BoundedWorker:
    def __init__(self, handle: Callable[[Any], None], maxlen: int, name: str = "gnesf-worker",
                 on_drop: Callable[[Any], None] | None = None, pinned: Callable[[Any], bool] | None = None):
        self._handle = handle
        self._queue: deque[Any] = deque()
        self._maxlen = maxlen
        self._cv = threading.Condition()
        self._stop = False
        self._busy = False
        self.drops: Counter[str] = Counter()
        self._on_drop = on_drop or (lambda item: self.drops.update(("queue_full",)))
        self._pinned = pinned or (lambda item: False)
        self.processed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, item: Any) -> None:
        dropped = None
        with self._cv:
            if len(self._queue) >= self._maxlen:
                victim = next((i for i, q in enumerate(self._queue) if not self._pinned(q)), None)
                if victim is not None:
                    dropped = self._queue[victim]
                    del self._queue[victim]
            self._queue.append(item)
            self._cv.notify()
        if dropped is not None:
            self._on_drop(dropped)

    def depth(self) -> int:
        with self._cv:
            return len(self._queue)

    def busy(self) -> bool:
        """An item is being handled right now."""
        with self._cv:
            return self._busy

    def idle(self) -> bool:
        with self._cv:
            return not self._queue and not self._busy

    def clear(self) -> None:
        with self._cv:
            self._queue.clear()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop:
                    self._cv.wait(0.1)
                if self._stop:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self._handle(item)
            finally:
                with self._cv:
                    self._busy = False
                self.processed += 1
