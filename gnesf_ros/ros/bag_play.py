"""Play a ROS 2 bag through rclpy (a small ``ros2 bag play`` for installs without rosbag2).

Each topic is published with the QoS its recorder offered (metadata.yaml), raw CDR straight from
the bag (no deserialisation), paced by the log times divided by ``rate``. With ``clock`` a
``/clock`` (rosgraph_msgs/Clock) follows the bag time for nodes with ``use_sim_time``.

Before playing, the player waits (bounded) for the subscribers that exist: a publisher started
before DDS discovery has matched its readers loses the first messages, even with reliable QoS.
Topics nobody subscribes to are not waited for. While it waits, ``/clock`` holds the bag's first
log time, so sim-time nodes start at the bag's first stamp.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from gnesf_ros.errors import DataError
from gnesf_ros.ros.bag import open_reader

log = logging.getLogger(__name__)

CLOCK_TOPIC = "/clock"
DEFAULT_WAIT_FOR_SUBSCRIBERS_S = 5.0
DEFAULT_SETTLE_S = 0.4  # the matched / graph counts must hold this long before playing


@dataclass
class SubscriberWait:
    """What the player waited for before playing: per topic the subscriptions its publisher
    matched and the subscriptions the ROS graph reports (``count_subscribers``)."""

    waited_s: float
    matched: dict[str, int] = field(default_factory=dict)
    graph: dict[str, int] = field(default_factory=dict)
    timed_out: bool = False
    stopped: bool = False

    @property
    def ready(self) -> bool:
        return all(self.matched[t] >= n for t, n in self.graph.items())

    def format(self) -> str:
        subscribed = sorted(t for t, n in self.graph.items() if n > 0)
        idle = sorted(t for t, n in self.graph.items() if n == 0)

        def count(t: str) -> str:
            m, n = self.matched[t], self.graph[t]
            return f"{t} ({n})" if m >= n else f"{t} ({m} of {n} matched)"

        head = f"waited {self.waited_s:.1f} s" + (" (timeout)" if self.timed_out else "") + (
            " (interrupted)" if self.stopped else "")
        if not subscribed:
            return f"{head}: no subscriber on any topic: {', '.join(idle)}"
        text = f"{head} for subscribers: {', '.join(count(t) for t in subscribed)}"
        return text + (f"; no subscriber: {', '.join(idle)}" if idle else "")


@dataclass
class PlayStats:
    published: Counter = field(default_factory=Counter)  # topic -> messages
    loops: int = 0
    wall_s: float = 0.0
    wait: SubscriberWait | None = None  # None: not waited (wait_for_subscribers_s <= 0)


def message_class(type_name: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class; DataError when not installed."""
    pkg, kind, name = type_name.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as e:
        raise DataError(f"message type {type_name} is not installed here ({e})") from e


def qos_from_bag(profiles) -> QoSProfile:
    """The first offered QoS profile of a topic (rosbags Qos) -> rclpy QoSProfile.
    Unknown / system-default policies fall back to reliable, volatile, keep last 10."""
    qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    if not profiles:
        return qos
    p = profiles[0]
    if p.reliability.name == "BEST_EFFORT":
        qos.reliability = ReliabilityPolicy.BEST_EFFORT
    if p.durability.name == "TRANSIENT_LOCAL":
        qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    if p.history.name == "KEEP_ALL":
        qos.history = HistoryPolicy.KEEP_ALL
    elif p.depth > 0:
        qos.depth = int(p.depth)
    return qos


def play(path: str | Path, rate: float = 1.0, loop: bool = False, clock: bool = False, clock_hz: float = 40.0,
         topics: list[str] | None = None, delay_s: float = 0.0,
         wait_for_subscribers_s: float = DEFAULT_WAIT_FOR_SUBSCRIBERS_S, settle_s: float = DEFAULT_SETTLE_S,
         stop: threading.Event | None = None, node_name: str = "gnesf_bag_player",
         handle_signals: bool = True) -> PlayStats:
    """Publish the bag's messages in log-time order.

    ``wait_for_subscribers_s``: before playing, wait up to this long (0: not at all) until, on
    every topic, the publisher has matched as many subscriptions as the ROS graph reports for it,
    at least one topic of the bag has a subscriber and these counts held for ``settle_s``; topics
    without subscribers are not waited for. One log line says what was waited for and how long
    (``PlayStats.wait``). With ``clock``, ``/clock`` holds the first message's log time meanwhile.
    ``delay_s``: then sleep this long. Playback timing starts at the first message.
    ``stop``: set it to end playback early (also Ctrl-C). ``handle_signals``: let rclpy install its
    SIGINT handler (off when the caller sets ``stop`` from its own signal handlers, as gnesf-bag
    does)."""
    if not rate > 0:
        raise DataError(f"playback rate must be > 0, got {rate}")
    if not clock_hz > 0:
        raise DataError(f"clock rate must be > 0 Hz, got {clock_hz}")
    stop = stop or threading.Event()
    stats = PlayStats()
    reader = open_reader(path)
    t_wall0 = None
    ctx = rclpy.Context()
    rclpy.init(context=ctx, signal_handler_options=None if handle_signals else SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node(node_name, context=ctx)
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        if not conns:
            raise DataError(f"{path}: none of the requested topics {topics} in the bag")
        pubs = {c.id: node.create_publisher(message_class(c.msgtype), c.topic, qos_from_bag(c.ext.offered_qos_profiles))
                for c in conns}
        waited = [(c.topic, pubs[c.id]) for c in conns]
        clock_pub, Clock = None, None
        if clock:
            from rosgraph_msgs.msg import Clock

            clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
            waited.append((CLOCK_TOPIC, clock_pub))
        if wait_for_subscribers_s > 0:
            tick = None
            if clock_pub is not None:
                t_first = _first_log_time(reader, conns)
                if t_first is not None:
                    _publish_clock(clock_pub, Clock, t_first)
                    tick = _Ticker(1.0 / clock_hz, lambda: _publish_clock(clock_pub, Clock, t_first))
            stats.wait = wait_for_subscribers(node, waited, wait_for_subscribers_s, stop, settle_s=settle_s,
                                              bag_topics={c.topic for c in conns}, on_tick=tick)
            (log.warning if stats.wait.timed_out else log.info)("%s", stats.wait.format())
        if delay_s > 0:
            stop.wait(delay_s)
        log.info("playing %s at %.2fx%s", path, rate, " (looping)" if loop else "")
        t_wall0 = time.monotonic()
        while not stop.is_set():
            t_bag0, t_start = None, time.monotonic()
            next_clock = 0.0
            for conn, t_ns, raw in reader.messages(connections=conns):
                if t_bag0 is None:
                    t_bag0 = t_ns
                    t_start = time.monotonic()  # timing starts at the first message
                due = t_start + (t_ns - t_bag0) * 1e-9 / rate
                while True:  # sleep until due, keeping /clock ticking
                    now = time.monotonic()
                    if stop.is_set() or now >= due:
                        break
                    if clock_pub is not None and now >= next_clock:
                        _publish_clock(clock_pub, Clock, t_bag0 + int((now - t_start) * rate * 1e9))
                        next_clock = now + 1.0 / clock_hz
                    stop.wait(min(due - now, 1.0 / clock_hz if clock_pub is not None else due - now))
                if stop.is_set():
                    break
                if clock_pub is not None:
                    _publish_clock(clock_pub, Clock, t_ns)
                pubs[conn.id].publish(raw)
                stats.published[conn.topic] += 1
            stats.loops += 1
            if not loop:
                break
        stats.wall_s = time.monotonic() - t_wall0
        time.sleep(0.2)  # let reliable writers hand the last samples over before the node goes
    except KeyboardInterrupt:
        log.info("playback interrupted")
        stats.wall_s = time.monotonic() - t_wall0 if t_wall0 is not None else 0.0
    finally:
        reader.close()
        rclpy.try_shutdown(context=ctx)  # Ctrl-C may have shut the context down already
    return stats


def _first_log_time(reader, conns) -> int | None:
    """Log time (ns) of the first message of ``conns`` (reads one message)."""
    gen = reader.messages(connections=conns)
    try:
        for _, t_ns, _ in gen:
            return int(t_ns)
        return None
    finally:
        gen.close()


def _publish_clock(pub, Clock, t_ns: int) -> None:
    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = t_ns // 10**9, t_ns % 10**9
    pub.publish(msg)


class _Ticker:
    """Calls ``fn`` at most every ``period_s`` when called."""

    def __init__(self, period_s: float, fn) -> None:
        self.period_s, self.fn, self.next = period_s, fn, 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self.next:
            self.fn()
            self.next = now + self.period_s


def wait_for_subscribers(node, publishers, timeout_s: float, stop: threading.Event | None = None,
                         settle_s: float = DEFAULT_SETTLE_S, bag_topics: set[str] | None = None,
                         on_tick=None, poll_s: float = 0.02) -> SubscriberWait:
    """Wait (at most ``timeout_s``) until every publisher in ``publishers`` ((topic, publisher)
    pairs) has matched all the subscriptions the ROS graph reports on its topic
    (``pub.get_subscription_count() >= node.count_subscribers(topic)``), at least one topic of
    ``bag_topics`` (default: all) has a subscriber, and these counts have not changed for
    ``settle_s``. Topics without subscribers are not waited for. ``on_tick`` is called on every
    poll (e.g. to publish /clock)."""
    stop = stop or threading.Event()
    topics = sorted({t for t, _ in publishers})
    bag_topics = set(topics) if bag_topics is None else set(bag_topics)
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    last, since = None, t0
    while True:
        now = time.monotonic()
        matched = dict.fromkeys(topics, 1 << 30)
        for topic, pub in publishers:  # several connections of one topic: the least matched counts
            matched[topic] = min(matched[topic], pub.get_subscription_count())
        graph = {t: node.count_subscribers(t) for t in topics}
        state = (matched, graph)
        if state != last:
            last, since = state, now
        ready = all(matched[t] >= graph[t] for t in topics) and any(graph[t] > 0 for t in bag_topics)
        if ready and now - since >= settle_s:
            return SubscriberWait(now - t0, matched, graph)
        if stop.is_set() or now >= deadline:
            return SubscriberWait(now - t0, matched, graph, timed_out=not stop.is_set(), stopped=stop.is_set())
        if on_tick is not None:
            on_tick()
        stop.wait(poll_s)
