"""Play a ROS 2 bag through rclpy (a small ``ros2 bag play`` for installs without rosbag2).

Each topic is published with the QoS its recorder offered (metadata.yaml), raw CDR straight from
the bag (no deserialisation), paced by the log times divided by ``rate``. With ``clock`` a
``/clock`` (rosgraph_msgs/Clock) follows the bag time for nodes with ``use_sim_time``.
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


@dataclass
class PlayStats:
    published: Counter = field(default_factory=Counter)  # topic -> messages
    loops: int = 0
    wall_s: float = 0.0


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
         topics: list[str] | None = None, delay_s: float = 0.0, wait_for_subscribers_s: float = 0.0,
         stop: threading.Event | None = None, node_name: str = "gnesf_bag_player",
         handle_signals: bool = True) -> PlayStats:
    """Publish the bag's messages in log-time order. ``wait_for_subscribers_s``: before playing,
    wait up to this long until every topic has a matched subscriber (for tests and scripted runs);
    ``delay_s``: then sleep this long. ``stop``: set it to end playback early (also Ctrl-C).
    ``handle_signals``: let rclpy install its SIGINT handler (off when the caller sets ``stop``
    from its own signal handlers, as gnesf-bag does)."""
    if not rate > 0:
        raise DataError(f"playback rate must be > 0, got {rate}")
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
        clock_pub, Clock = None, None
        if clock:
            from rosgraph_msgs.msg import Clock

            clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        _wait_for_subscribers(list(pubs.values()), wait_for_subscribers_s, stop)
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


def _publish_clock(pub, Clock, t_ns: int) -> None:
    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = t_ns // 10**9, t_ns % 10**9
    pub.publish(msg)


def _wait_for_subscribers(pubs, timeout_s: float, stop: threading.Event) -> None:
    deadline = time.monotonic() + timeout_s
    while timeout_s > 0 and not stop.is_set() and time.monotonic() < deadline:
        if all(p.get_subscription_count() > 0 for p in pubs):
            return
        stop.wait(0.02)
    missing = [p.topic_name for p in pubs if p.get_subscription_count() == 0]
    if timeout_s > 0 and missing:
        log.warning("no subscriber after %.1f s on: %s", timeout_s, ", ".join(missing))
