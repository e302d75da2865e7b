"""Feed a :class:`~gnesf_ros.geometry.tf_buffer.TransformBuffer` from ``/tf`` and ``/tf_static``.

QoS as tf2_ros's TransformListener: ``/tf`` reliable, volatile, keep last 100; ``/tf_static``
reliable, transient local, keep last 100 (late joiners still get the static transforms).
Invalid transforms (NaN, non-unit quaternion, empty frame ids) are counted and logged
(throttled), never raised into the executor.
"""
from __future__ import annotations

from collections import Counter

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from gnesf_ros.geometry.tf_buffer import TransformBuffer, TransformError
from gnesf_ros.ros.conversions import stamp_to_sec

TF_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


class TfListener:
    """Subscribes to ``tf_topic`` / ``tf_static_topic`` on ``node`` and fills ``buffer``.

    ``counts``: accepted / accepted_static / rejected transforms (for /diagnostics).
    """

    def __init__(self, node: Node, buffer: TransformBuffer, tf_topic: str = "/tf",
                 tf_static_topic: str = "/tf_static", callback_group=None) -> None:
        self.node = node
        self.buffer = buffer
        self.counts: Counter = Counter()
        self._subs = [
            node.create_subscription(TFMessage, tf_topic, lambda m: self._on_tf(m, False), TF_QOS,
                                     callback_group=callback_group),
            node.create_subscription(TFMessage, tf_static_topic, lambda m: self._on_tf(m, True),
                                     TF_STATIC_QOS, callback_group=callback_group),
        ]

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        for ts in msg.transforms:
            t, r = ts.transform.translation, ts.transform.rotation
            try:
                self.buffer.set_transform(ts.header.frame_id, ts.child_frame_id, stamp_to_sec(ts.header.stamp),
                                          translation=(t.x, t.y, t.z), quaternion=(r.x, r.y, r.z, r.w),
                                          static=static)
            except TransformError as e:
                self.counts["rejected"] += 1
                self.node.get_logger().warning(f"ignoring transform: {e}", throttle_duration_sec=5.0)
                continue
            self.counts["accepted_static" if static else "accepted"] += 1

    def destroy(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []
