"""Approximate-time pairing of colour, depth (optional) and camera_info (no rclpy inside).

Colour drives the output: each colour message is paired with the depth message nearest in time
within ``slop_s`` and with the latest camera_info. Buffers are bounded (drop oldest, counted).
A colour that finds no depth within ``max_wait_s`` of newer traffic is dropped as ``no_depth``.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any


@dataclass
class SyncedInput:
    stamp: float
    color: Any
    depth: Any | None
    info: Any


class ApproximateSync:
    def __init__(self, use_depth: bool, slop_s: float = 0.02, max_wait_s: float = 0.5,
                 buffer_len: int = 10):
        self.use_depth = use_depth
        self.slop_s = slop_s
        self.max_wait_s = max_wait_s
        self._colors: deque[tuple[float, Any]] = deque(maxlen=buffer_len)
        self._depths: deque[tuple[float, Any]] = deque(maxlen=buffer_len)
        self._info: Any = None
        self.drops: Counter[str] = Counter()

    def add_info(self, msg: Any) -> None:
        self._info = msg

    def add_color(self, stamp: float, msg: Any) -> list[SyncedInput]:
        if len(self._colors) == self._colors.maxlen:
            self.drops["sync_overflow"] += 1
        self._colors.append((stamp, msg))
        return self._match(stamp)

    def add_depth(self, stamp: float, msg: Any) -> list[SyncedInput]:
        if len(self._depths) == self._depths.maxlen:
            self.drops["sync_overflow"] += 1
        self._depths.append((stamp, msg))
        return self._match(stamp)

    def reset(self) -> None:
        self._colors.clear()
        self._depths.clear()

    def _nearest_depth(self, stamp: float) -> tuple[float, Any] | None:
        best = min(self._depths, key=lambda d: abs(d[0] - stamp), default=None)
        if best is None or abs(best[0] - stamp) > self.slop_s:
            return None
        return best

    def _match(self, now: float) -> list[SyncedInput]:
        out: list[SyncedInput] = []
        if self._info is None:
            # Without intrinsics nothing can be mapped; keep the newest colour only.
            while len(self._colors) > 1:
                self._colors.popleft()
                self.drops["no_camera_info"] += 1
            return out
        keep: deque[tuple[float, Any]] = deque(maxlen=self._colors.maxlen)
        for stamp, color in self._colors:
            if not self.use_depth:
                out.append(SyncedInput(stamp, color, None, self._info))
                continue
            depth = self._nearest_depth(stamp)
            if depth is not None:
                self._depths.remove(depth)
                out.append(SyncedInput(stamp, color, depth[1], self._info))
            elif now - stamp > self.max_wait_s:
                self.drops["no_depth"] += 1
            else:
                keep.append((stamp, color))
        self._colors = keep
        # Depth too old to pair with any future colour is released.
        horizon = now - self.max_wait_s - self.slop_s
        while self._depths and self._depths[0][0] < horizon:
            self._depths.popleft()
        return out
