"""Approximate-time pairing of colour with depth, segmentation (both optional) and camera_info.

No rclpy inside. Colour drives the output: each colour message is paired with the depth and the
segmentation message nearest in time within ``slop_s`` and with the latest camera_info. Time is
message time (the newest stamp seen). Buffers are bounded (drop oldest, counted as
``sync_overflow``). A colour still missing a partner ``max_wait_s`` after newer traffic is dropped
as ``no_depth`` / ``no_segmentation``. A stamp more than ``jump_back_s`` older than the newest
(a looping bag) clears the buffers so stale "future" messages never pair with the new loop.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

PARTNERS = ("depth", "segmentation")


@dataclass
class SyncedInput:
    """One colour message with its partners (None when that stream is not used)."""

    stamp: float
    color: Any
    depth: Any | None
    info: Any
    segmentation: Any | None = None


class ApproximateSync:
    def __init__(self, use_depth: bool, slop_s: float = 0.02, max_wait_s: float = 0.5,
                 buffer_len: int = 10, use_segmentation: bool = False, jump_back_s: float = 1.0,
                 on_drop: Callable[[str, str], None] | None = None):
        """``on_drop(reason, message)`` is told of every dropped message (default: counted in ``drops``)."""
        self.slop_s = slop_s
        self.max_wait_s = max_wait_s
        self.jump_back_s = jump_back_s
        self._buffer_len = buffer_len
        self._colors: deque[tuple[float, Any]] = deque(maxlen=buffer_len)
        used = {"depth": use_depth, "segmentation": use_segmentation}
        self._partners: dict[str, deque[tuple[float, Any]]] = {
            k: deque(maxlen=buffer_len) for k in PARTNERS if used[k]}
        self._info: Any = None
        self._newest: float | None = None
        self.drops: Counter[str] = Counter()
        self._on_drop = on_drop or (lambda reason, message: self.drops.update((reason,)))
        self.jumps = 0

    @property
    def use_depth(self) -> bool:
        return "depth" in self._partners

    @property
    def pending(self) -> int:
        """Colour images waiting for their partners (or camera_info)."""
        return len(self._colors)

    def add_info(self, msg: Any) -> None:
        self._info = msg

    def add_color(self, stamp: float, msg: Any) -> list[SyncedInput]:
        self._push(self._colors, stamp, msg)
        return self._match()

    def add_depth(self, stamp: float, msg: Any) -> list[SyncedInput]:
        return self._add_partner("depth", stamp, msg)

    def add_segmentation(self, stamp: float, msg: Any) -> list[SyncedInput]:
        return self._add_partner("segmentation", stamp, msg)

    def reset(self) -> None:
        self._colors.clear()
        for q in self._partners.values():
            q.clear()
        self._newest = None

    def _add_partner(self, name: str, stamp: float, msg: Any) -> list[SyncedInput]:
        if name not in self._partners:
            return []
        self._push(self._partners[name], stamp, msg)
        return self._match()

    def _push(self, q: deque, stamp: float, msg: Any) -> None:
        if self._newest is not None and stamp < self._newest - self.jump_back_s:
            self.jumps += 1
            self.reset()
        self._newest = stamp if self._newest is None else max(self._newest, stamp)
        if len(q) == q.maxlen:
            self._on_drop("sync_overflow", f"sync buffer full ({q.maxlen}): oldest message at {q[0][0]:.3f} dropped")
        q.append((stamp, msg))

    def _nearest(self, q: deque, stamp: float) -> tuple[float, Any] | None:
        best = min(q, key=lambda d: abs(d[0] - stamp), default=None)
        if best is None or abs(best[0] - stamp) > self.slop_s:
            return None
        return best

    def _match(self) -> list[SyncedInput]:
        out: list[SyncedInput] = []
        if self._info is None:
            # Without intrinsics nothing can be mapped; keep the newest colour only.
            while len(self._colors) > 1:
                self._colors.popleft()
                self._on_drop("no_camera_info", "no camera_info received yet: colour image dropped (is the "
                                                "camera_info topic right and published?)")
            return out
        now = self._newest
        keep: deque[tuple[float, Any]] = deque(maxlen=self._buffer_len)
        for stamp, color in self._colors:
            found = {k: self._nearest(q, stamp) for k, q in self._partners.items()}
            missing = [k for k, v in found.items() if v is None]
            if not missing:
                for k, item in found.items():
                    self._partners[k].remove(item)
                out.append(SyncedInput(stamp, color, found.get("depth", (0, None))[1], self._info,
                                       found.get("segmentation", (0, None))[1]))
            elif now - stamp > self.max_wait_s:
                self._on_drop(f"no_{missing[0]}", f"colour image at {stamp:.3f} found no {missing[0]} image within "
                                                  f"{self.slop_s} s (sync_slop_s) in {self.max_wait_s} s")
            else:
                keep.append((stamp, color))
        self._colors = keep
        # Partners too old to pair with any future colour are released.
        horizon = now - self.max_wait_s - self.slop_s
        for q in self._partners.values():
            while q and q[0][0] < horizon:
                q.popleft()
        return out
