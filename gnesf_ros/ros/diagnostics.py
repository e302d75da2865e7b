"""Counters behind the node's /diagnostics: input rates, drops by reason, node counters.

Pure Python except ``status()`` (diagnostic_msgs). Drops are logged at most every
``log_every_s`` per reason, so a flood of bad input never floods the log.
"""
from __future__ import annotations

import os
import time
from collections import Counter, deque

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from gnesf_ros.ros.inputs import DROP_REASONS

RATE_WINDOW = 50  # arrivals kept per topic for the rate estimate
STALE_S = 2.0  # a topic silent for longer reports 0 Hz


def rss_mb() -> float:
    """Current resident set size (MiB) from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class NodeStats:
    """Arrival times per input topic, drops per reason and free-form counters."""

    def __init__(self, logger, topics: tuple[str, ...], log_every_s: float = 5.0):
        self.logger = logger
        self.log_every_s = log_every_s
        self.arrivals = {t: deque(maxlen=RATE_WINDOW) for t in topics}
        self.received: Counter[str] = Counter({t: 0 for t in topics})  # messages per input since start
        self.drops: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._last_log: dict[str, float] = {}

    def arrived(self, topic: str) -> None:
        self.arrivals[topic].append(time.monotonic())
        self.received[topic] += 1

    def drop(self, reason: str, message: str) -> None:
        """Count a dropped input; log it (throttled per reason)."""
        self.drops[reason] += 1
        now = time.monotonic()
        if now - self._last_log.get(reason, -1e9) >= self.log_every_s:
            self._last_log[reason] = now
            self.logger.warning(f"dropped input ({reason}, {self.drops[reason]} so far): {message}")

    def rate_hz(self, topic: str) -> float:
        q = self.arrivals[topic]
        if len(q) < 2 or time.monotonic() - q[-1] > STALE_S:
            return 0.0
        return (len(q) - 1) / max(q[-1] - q[0], 1e-9)

    def drop_counts(self, *more: Counter) -> Counter:
        """Every known reason (0 when never seen) plus this node's and ``more`` counters."""
        drops = Counter({r: 0 for r in DROP_REASONS})
        drops.update(self.drops)
        for c in more:
            drops.update(c)
        return drops

    @staticmethod
    def status(name: str, values: dict[str, str]) -> DiagnosticStatus:
        """WARN with the number of drops when any input was dropped, else OK."""
        dropped = sum(int(v) for k, v in values.items() if k.startswith("drops_"))
        return DiagnosticStatus(level=DiagnosticStatus.WARN if dropped else DiagnosticStatus.OK, name=name,
                                hardware_id="gnesf_ros",
                                message=f"{dropped} inputs dropped, see drops_*" if dropped else "ok",
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])
