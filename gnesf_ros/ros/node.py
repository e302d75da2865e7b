"""gnesf_mapping: the ROS 2 node, a thin adapter over ``gnesf_ros.pipeline.Mapper``.

Callbacks only check stamps, pair messages (ApproximateSync) and enqueue (bounded, drop-oldest);
one worker thread looks up the camera pose (waiting up to tf_timeout_s), converts messages to a
``Frame`` and calls the mapper; a lock keeps services, timers and the worker from racing on the
map. The node is an rclpy LifecycleNode: with ``use_lifecycle: false`` (default) it configures
and activates itself; otherwise a lifecycle manager drives it (configure loads models and the
map, activate starts subscriptions, deactivate pauses keeping the map, cleanup frees it).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from gnesf_ros.config import ConfigError, load_config
from gnesf_ros.errors import GnesfError
from gnesf_ros.geometry.camera import is_valid_pose
from gnesf_ros.geometry.tf_buffer import TransformBuffer
from gnesf_ros.ros import conversions as conv
from gnesf_ros.ros.diagnostics import NodeStats, rss_mb
from gnesf_ros.ros.inputs import InputRejected, to_frame
from gnesf_ros.ros.parameters import NODE_NAME, NodeConfig, build_configs, parameter_table
from gnesf_ros.ros.publishing import MapPublishers
from gnesf_ros.ros.sync import ApproximateSync, SyncedInput
from gnesf_ros.ros.tf_listener import TfListener
from gnesf_ros.ros.worker import BoundedWorker

POSE_TOPIC_FRAME = "gnesf_pose_topic_camera"  # child frame the pose-topic fallback feeds
DEFAULT_SAVE_PATH = "gnesf_map.npz"
FLUSH = object()  # worker item: map the unfinished keyframe window


class _JumpAwareTfListener(TfListener):
    """TfListener that forgets dynamic transforms when /tf time jumps back (a looping bag):
    otherwise the old loop's samples shadow the new ones (or the new ones are refused as too old)."""

    def __init__(self, node, buffer, jump_back_s: float, **kw):
        self._newest: float | None = None
        self._jump_back_s = jump_back_s
        self.jumps = 0
        super().__init__(node, buffer, **kw)

    def _on_tf(self, msg, static: bool) -> None:
        if not static and msg.transforms:
            stamp = min(conv.stamp_to_sec(t.header.stamp) for t in msg.transforms)
            if self._newest is not None and stamp < self._newest - self._jump_back_s:
                self.buffer.clear()
                self.jumps += 1
                self._newest = None
            self._newest = stamp if self._newest is None else max(self._newest, stamp)
        super()._on_tf(msg, static)


def _descriptor(p) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=p.description)
    if p.range is not None and not isinstance(p.default, bool):
        lo, hi = p.range
        if isinstance(p.default, int):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    if p.choices:
        desc.additional_constraints = "one of: " + ", ".join(p.choices)
    return desc


class MappingNode(LifecycleNode):
    """The gnesf_mapping node (keyword arguments go to rclpy's Node, e.g. parameter_overrides)."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        for p in parameter_table():
            self.declare_parameter(p.name, p.default, _descriptor(p))
        self.stats = NodeStats(self.get_logger(), ("color", "depth", "camera_info", "segmentation"))
        self.counts = self.stats.counts
        self._lock = threading.Lock()
        self.mapper = None
        self.worker: BoundedWorker | None = None
        self.outputs: MapPublishers | None = None
        self.sync: ApproximateSync | None = None
        self.tf = TransformBuffer()
        self.tf_listener: TfListener | None = None
        self._subs: list = []
        self._timers: list = []
        self._services: list = []
        self._last_stamp: float | None = None
        self._last_color_stamp: float | None = None
        self._last_fragment = {"ms": 0.0, "wall": 0.0}
        self._last_input = time.monotonic()  # when the last frame was enqueued (idle flush)
        self._flush_queued = False
        self._map_version = 0
        self._published_version = -1
        self._last_publish = -1e9  # monotonic time of the last full map publication
        # Three lanes of the executor: inputs (the sync is not thread-safe), /tf, timers + services.
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._tf_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.get_logger().info("parameters:\n" + "\n".join(
            f"  {p.name}: {self.get_parameter(p.name).value}" for p in parameter_table()))
        if not self.get_parameter("use_lifecycle").value:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise SystemExit(2)
            self.trigger_activate()

    # ---------------------------------------------------------------- configuration
    def _read_configs(self):
        values = {p.name: self.get_parameter(p.name).value for p in parameter_table()}
        base = load_config(values["mapper_config"]) if values["mapper_config"] else None
        if base is not None:  # parameters left at their defaults must not override the YAML
            defaults = {p.name: p.default for p in parameter_table()}
            values = {n: v for n, v in values.items() if not n.startswith("mapper.") or v != defaults[n]}
        return build_configs(values, base)

    def _build_mapper(self):
        """Mapper with its segmenter and model loaded now, so a missing file fails at start."""
        from gnesf_ros.pipeline import Mapper

        cfg = self.mapper_cfg
        if cfg.segmenter.backend == "oracle":
            raise ConfigError("parameter mapper.segmenter.backend: 'oracle' needs ground-truth labels, which topics "
                              "do not carry; use 'external' (label images on segmentation_topic) or 'mask2former'")
        mapper = Mapper(cfg)
        try:
            mapper.segmenter  # noqa: B018 - loads the checkpoint
        except GnesfError as e:
            raise ConfigError(f"parameter mapper.segmenter.checkpoint = '{cfg.segmenter.checkpoint}': {e}") from None
        if cfg.mode in ("rgb", "rgbd"):
            try:
                mapper.warm_up()  # loads the weights; the first fragment then runs at full speed
            except GnesfError as e:
                raise ConfigError(f"parameter mapper.model.weights = '{cfg.model.weights}': {e}") from None
        if self.node_cfg.load_map_path:
            from gnesf_ros.mapping import SemanticVoxelMap

            try:
                mapper.map = SemanticVoxelMap.load(self.node_cfg.load_map_path, mapper.class_table)
            except GnesfError as e:
                raise ConfigError(f"parameter load_map_path = '{self.node_cfg.load_map_path}': {e}") from None
            self.get_logger().info(f"loaded map {self.node_cfg.load_map_path} ({mapper.map.num_blocks} blocks)")
        return mapper

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.node_cfg, self.mapper_cfg = self._read_configs()
            self.mapper = self._build_mapper()
        except GnesfError as e:
            self.get_logger().fatal(f"cannot configure: {e}")
            return TransitionCallbackReturn.FAILURE
        c = self.node_cfg
        self.outputs = MapPublishers(self, self.mapper.class_table, c.mesh_max_vertices_per_marker)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._services = [
            self.create_service(Trigger, "gnesf/save_map", self._on_save, callback_group=self._timer_group),
            self.create_service(Trigger, "gnesf/reset", self._on_reset, callback_group=self._timer_group),
            self.create_service(Trigger, "gnesf/flush", self._on_flush, callback_group=self._timer_group),
        ]
        self.tf_listener = _JumpAwareTfListener(self, self.tf, c.time_jump_threshold_s, callback_group=self._tf_group)
        self._map_version += 1
        self.get_logger().info(f"configured: mode={self.mapper_cfg.mode}, segmenter={self.mapper_cfg.segmenter.backend}, "
                               f"voxel={self.mapper_cfg.map.voxel_size_m} m, processing size "
                               f"{self.mapper_cfg.camera.width}x{self.mapper_cfg.camera.height}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        c = self.node_cfg
        qos = QoSProfile(depth=c.input_qos_depth, reliability=ReliabilityPolicy.BEST_EFFORT
                         if c.input_qos == "sensor_data" else ReliabilityPolicy.RELIABLE)
        use_depth = c.use_depth and self.mapper_cfg.mode != "rgb"
        use_seg = self.mapper_cfg.segmenter.backend == "external"
        self.sync = ApproximateSync(use_depth=use_depth, slop_s=c.sync_slop_s, max_wait_s=c.tf_timeout_s,
                                    use_segmentation=use_seg, jump_back_s=c.time_jump_threshold_s)
        g = self._input_group
        sub = self.create_subscription
        self._subs = [sub(Image, c.color_topic, self._on_color, qos, callback_group=g),
                      sub(CameraInfo, c.camera_info_topic, self._on_info, qos, callback_group=g)]
        if use_depth:
            self._subs.append(sub(Image, c.depth_topic, self._on_depth, qos, callback_group=g))
        if use_seg:
            self._subs.append(sub(Image, c.segmentation_topic, self._on_segmentation, qos, callback_group=g))
        if c.pose_source != "tf":
            msg_type = PoseStamped if c.pose_source == "pose" else Odometry
            self._subs.append(sub(msg_type, c.pose_topic, self._on_pose, 50, callback_group=g))
        self.worker = BoundedWorker(self._process, c.queue_size)
        self.worker.start()
        if c.diagnostics_rate_hz > 0:
            self._timers.append(self.create_timer(1.0 / c.diagnostics_rate_hz, self._publish_diagnostics,
                                                  callback_group=self._timer_group))
        self._timers.append(self.create_timer(1.0 / max(c.publish_rate_hz, 1.0), self._on_publish_timer,
                                              callback_group=self._timer_group))
        self.get_logger().info(f"active: {c.color_topic}" + (f" + {c.depth_topic}" if use_depth else "")
                               + (f" + {c.segmentation_topic}" if use_seg else "") + f", poses from {c.pose_source}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        for s in self._subs:
            self.destroy_subscription(s)
        for t in self._timers:
            self.destroy_timer(t)
        self._subs, self._timers = [], []
        if self.worker is not None:
            self.worker.stop()
            self.stats.drops.update(self.worker.drops)
            self.worker = None
        if self.sync is not None:
            self.stats.drops.update(self.sync.drops)
            self.sync = None
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.outputs is not None:
            self.outputs.destroy()
            self.outputs = None
        for srv in self._services:
            self.destroy_service(srv)
        self._services = []
        if self.tf_listener is not None:
            self.tf_listener.destroy()
            self.tf_listener = None
        if getattr(self, "diag_pub", None) is not None:
            self.destroy_publisher(self.diag_pub)
            self.diag_pub = None
        with self._lock:
            self.mapper = None
        self.tf.clear()
        self._last_stamp = self._last_color_stamp = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop_worker()
        self.save_on_exit()
        return TransitionCallbackReturn.SUCCESS

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def destroy_node(self) -> None:
        self.stop_worker()
        super().destroy_node()

    def save_on_exit(self) -> None:
        """Write the map to save_map_path (if set) - on SIGINT/SIGTERM and lifecycle shutdown."""
        path = getattr(self, "node_cfg", NodeConfig()).save_map_path
        if path and self.mapper is not None:
            with self._lock:
                saved = self.mapper.map.save(path)
            self.get_logger().info(f"map saved to {saved} ({self.mapper.map.num_blocks} blocks)")

    # ---------------------------------------------------------------- callbacks (enqueue only)
    def _drop(self, reason: str, message: str) -> None:
        self.stats.drop(reason, message)

    def _enqueue(self, items: list[SyncedInput]) -> None:
        worker = self.worker
        if worker is not None:
            for item in items:
                worker.put((time.monotonic(), item))
            if items:
                self._last_input, self._flush_queued = time.monotonic(), False

    def _queue_flush(self) -> int:
        """Ask the worker (after the frames already queued) to map the unfinished window; -> keyframes pending."""
        pending = self.mapper.pending_keyframes if self.mapper is not None else 0
        if self.worker is not None and not self._flush_queued:
            self._flush_queued = True
            self.worker.put((time.monotonic(), FLUSH))
        return pending

    def _on_info(self, msg: CameraInfo) -> None:
        self.stats.arrived("camera_info")
        self.sync.add_info(msg)

    def _on_color(self, msg: Image) -> None:
        self.stats.arrived("color")
        stamp = conv.stamp_to_sec(msg.header.stamp)
        if stamp == self._last_color_stamp:
            self._drop("duplicate_stamp", f"colour stamp {stamp:.6f} seen twice")
            return
        self._last_color_stamp = stamp
        self._enqueue(self.sync.add_color(stamp, msg))

    def _on_depth(self, msg: Image) -> None:
        self.stats.arrived("depth")
        self._enqueue(self.sync.add_depth(conv.stamp_to_sec(msg.header.stamp), msg))

    def _on_segmentation(self, msg: Image) -> None:
        self.stats.arrived("segmentation")
        self._enqueue(self.sync.add_segmentation(conv.stamp_to_sec(msg.header.stamp), msg))

    def _on_pose(self, msg) -> None:
        pose = msg.pose.pose if isinstance(msg, Odometry) else msg.pose
        try:
            T = conv.pose_to_matrix(pose)
            self.tf.set_transform(msg.header.frame_id or self.node_cfg.map_frame, POSE_TOPIC_FRAME,
                                  conv.stamp_to_sec(msg.header.stamp), T)
        except GnesfError as e:
            self._drop("bad_pose", str(e))

    # ---------------------------------------------------------------- worker
    def _lookup_pose(self, frame_id: str, stamp: float, received: float) -> np.ndarray:
        c = self.node_cfg
        child = POSE_TOPIC_FRAME if c.pose_source != "tf" else frame_id
        deadline = received + c.tf_timeout_s
        while True:
            try:
                return self.tf.lookup(c.map_frame, child, stamp)
            except GnesfError as e:
                if time.monotonic() >= deadline:
                    raise InputRejected("no_transform", f"{c.map_frame} -> {child} at {stamp:.3f} not available "
                                                        f"within tf_timeout_s = {c.tf_timeout_s} s: {e}") from None
            time.sleep(0.005)

    def _check_time(self, stamp: float) -> None:
        """Duplicate / out-of-order / jumped-back stamps: raise InputRejected or reset the map."""
        last, c = self._last_stamp, self.node_cfg
        if last is not None and stamp == last:
            raise InputRejected("duplicate_stamp", f"stamp {stamp:.6f} seen twice")
        if last is not None and stamp < last:
            if last - stamp <= c.time_jump_threshold_s:
                raise InputRejected("out_of_order", f"stamp {stamp:.3f} older than the last mapped {last:.3f}")
            if c.on_time_jump == "ignore":
                raise InputRejected("time_backwards", f"time jumped back {last - stamp:.2f} s (on_time_jump: ignore)")
            self.get_logger().warning(f"time jumped back {last - stamp:.2f} s: resetting the map (on_time_jump: reset)")
            with self._lock:
                self.mapper.reset()
                self._map_version += 1
            self.counts["time_jump_resets"] += 1
        self._last_stamp = stamp

    def _process(self, queued: tuple[float, SyncedInput]) -> None:
        received, item = queued
        if item is FLUSH:
            self._flush()
            return
        self.counts["frames_received"] += 1
        try:
            self._check_time(item.stamp)
            T = self._lookup_pose(item.color.header.frame_id, item.stamp, received)
            if not is_valid_pose(T):
                raise InputRejected("invalid_pose", "transform is not a finite rigid motion")
            frame = to_frame(item, T, self.mapper_cfg.camera, self.node_cfg.max_image_pixels,
                             self.counts["frames_received"], self.mapper.class_table.num_classes)
            self._map_step(lambda: self.mapper.add_frame(frame), item.color.header.stamp)
            self.counts["frames_mapped"] += 1
            self._publish_renders(frame, item.color.header)
        except InputRejected as e:
            self._drop(e.reason, str(e))
        except Exception as e:  # noqa: BLE001 - the node must survive any single bad input
            self._drop("internal_error", f"{type(e).__name__}: {e}")

    def _flush(self) -> None:
        try:
            if self._map_step(self.mapper.flush):
                self.counts["flushes"] += 1
        except Exception as e:  # noqa: BLE001 - as _process: the node keeps running
            self._drop("internal_error", f"flushing the window: {type(e).__name__}: {e}")

    def _map_step(self, step: Callable[[], object | None], stamp=None) -> bool:
        """Run a mapper call that may map a fragment (under the map lock); if it did, time it and
        publish the changed map. -> whether the map changed."""
        t0 = time.perf_counter()
        with self._lock:
            update = step()
            if update is not None:
                self._map_version += 1
        if update is None:
            return False
        self._last_fragment = {"ms": (time.perf_counter() - t0) * 1e3, "wall": time.time()}
        self._publish_map(stamp)
        return True

    def _publish_renders(self, frame, header: Header) -> None:
        n = self.node_cfg.render_every_n
        if n and self.counts["frames_mapped"] % n == 0 and self.outputs.renders_wanted():
            with self._lock:
                self.outputs.publish_renders(self.mapper.map, frame.T_world_cam, frame.K, frame.size, header)

    # ---------------------------------------------------------------- map outputs
    def _publish_map(self, stamp=None, blocking: bool = True) -> None:
        """Publish the map products if the map changed (at most publish_rate_hz), or the ones a
        new subscriber is waiting for. The timer calls it non-blocking: never waits on the worker."""
        rate = self.node_cfg.publish_rate_hz
        changed = self._map_version != self._published_version
        due = rate == 0 or time.monotonic() - self._last_publish >= 1.0 / rate
        outputs = self.outputs
        if outputs is None or not ((changed and due) or outputs.has_pending_subscribers()):
            return
        if not self._lock.acquire(blocking=blocking):
            return
        try:
            if self.mapper is None:
                return
            header = Header(frame_id=self.node_cfg.map_frame,
                            stamp=stamp if stamp is not None else self.get_clock().now().to_msg())
            version = self._map_version
            outputs.publish_map(self.mapper.map, header, only_pending=not (changed and due))
            if changed and due:
                self._published_version, self._last_publish = version, time.monotonic()
        finally:
            self._lock.release()

    def _on_publish_timer(self) -> None:
        idle = self.node_cfg.idle_flush_s
        if (idle > 0 and self.worker is not None and not self._flush_queued and self.worker.idle()
                and time.monotonic() - self._last_input > idle and self.mapper is not None
                and self.mapper.pending_keyframes):
            self._queue_flush()
        try:
            self._publish_map(blocking=False)
        except Exception as e:  # noqa: BLE001
            self._drop("internal_error", f"publishing the map: {type(e).__name__}: {e}")

    # ---------------------------------------------------------------- services
    def _on_save(self, request, response):
        path = self.node_cfg.save_map_path or os.path.join(os.getcwd(), DEFAULT_SAVE_PATH)
        try:
            with self._lock:
                saved = self.mapper.map.save(path)
            response.success, response.message = True, f"saved {self.mapper.map.num_blocks} blocks to {saved}"
        except (GnesfError, OSError) as e:
            response.success, response.message = False, f"cannot save the map to {path}: {e}"
        return response

    def _on_flush(self, request, response):
        pending = self._queue_flush()
        response.success = self.worker is not None
        response.message = (f"mapping {pending} pending keyframes after the queued frames" if response.success
                            else "not active: nothing to flush")
        return response

    def _on_reset(self, request, response):
        if self.worker is not None:
            self.worker.clear()
        with self._lock:
            self.mapper.reset()
            self._map_version += 1
        self._last_stamp = None
        response.success, response.message = True, "map cleared"
        return response

    # ---------------------------------------------------------------- diagnostics
    def drop_counts(self) -> Counter:
        more = [src.drops for src in (self.worker, self.sync) if src is not None]
        if self.tf_listener is not None:
            more.append(Counter(tf_rejected=self.tf_listener.counts["rejected"]))
        return self.stats.drop_counts(*more)

    def diagnostics(self) -> dict[str, str]:
        """The key/values of the /diagnostics status (also handy for tests)."""
        kv = {f"{k}_rate_hz": f"{self.stats.rate_hz(k):.2f}" for k in self.stats.arrivals}
        kv.update({f"{k}_msgs": str(v) for k, v in self.stats.received.items()})
        kv["queue_depth"] = str(self.worker.depth() if self.worker else 0)
        kv["sync_pending"] = str(self.sync.pending if self.sync is not None else 0)
        kv.update({k: str(self.counts[k]) for k in ("frames_received", "frames_mapped", "time_jump_resets", "flushes")})
        last = self._last_fragment
        kv["last_fragment_ms"] = f"{last['ms']:.1f}"
        kv["last_fragment_age_s"] = f"{time.time() - last['wall']:.1f}" if last["wall"] else "never"
        kv["map_changes_unpublished"] = str(int(self._map_version != self._published_version))
        kv["rss_mb"] = f"{rss_mb():.1f}"
        mapper = self.mapper
        if mapper is not None:
            kv["map_blocks"] = str(mapper.map.num_blocks)
            kv["map_memory_mb"] = f"{mapper.map.memory_bytes() / 2**20:.2f}"
            kv["pending_keyframes"] = str(mapper.pending_keyframes)
            kv.update({f"mapper_{k}": str(v) for k, v in mapper.stats.items() if not k.startswith("map_")})
        kv.update({f"drops_{k}": str(v) for k, v in sorted(self.drop_counts().items())})
        return kv

    def _publish_diagnostics(self) -> None:
        status = self.stats.status(f"{self.get_fully_qualified_name()}: mapper", self.diagnostics())
        self.diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gnesf-node`` / ``ros2 run gnesf_ros mapping_node``. SIGINT and SIGTERM
    stop it (rclpy's handlers); the map is then saved when save_map_path is set."""
    rclpy.init(args=argv if argv is not None else sys.argv)
    try:
        node = MappingNode()
    except SystemExit as e:
        rclpy.try_shutdown()
        return int(e.code or 2)
    except Exception as e:  # noqa: BLE001 - parameter type errors and the like: one readable line
        print(f"gnesf-node: {type(e).__name__}: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop_worker()
        try:
            node.save_on_exit()
        except (GnesfError, OSError) as e:
            print(f"gnesf-node: cannot save the map: {e}", file=sys.stderr)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
