"""gnesf_mapping: the ROS 2 node, a thin adapter over ``gnesf_ros.pipeline.Mapper``.

Three stages, so that mapping a fragment never costs a keyframe:
  callbacks  check stamps, pair messages (ApproximateSync), enqueue (``queue_size``, drop oldest);
  frames     one thread looks up the camera pose (waiting up to tf_timeout_s), converts messages to
             a ``Frame`` and runs the keyframe test; keyframes go on, other frames only get renders;
  keyframes  one thread maps them (``keyframe_queue_fragments`` windows deep), publishing the map.
Renders run on a third thread that keeps only the newest request. A lock keeps services, timers and
the workers from racing on the map. Idle flush, map publication and /diagnostics run on the steady
clock, so they go on when /clock stops at the end of a bag. The node is an rclpy LifecycleNode: with
``use_lifecycle: false`` (default) it configures and activates itself; otherwise a lifecycle
manager drives it (configure loads and warms up the models and loads the map, activate starts
subscriptions, deactivate pauses keeping the map, cleanup frees it).
"""
from __future__ import annotations

import difflib
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
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
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
HOUSEKEEPING_HZ = 10.0  # idle-flush check and rate-limited map publication (steady clock)
# Parameters rclpy or launch may set on any node besides the ones this node declares.
_FOREIGN_PARAMETERS = ("use_sim_time", "start_type_description_service")


USAGE = """usage: gnesf-node [--ros-args --params-file FILE -p NAME:=VALUE -r FROM:=TO ...]

The gnesf_mapping ROS 2 node (semantic mapping from posed RGB(-D) images). Parameters: config/mapping.yaml
(every one described: ros2 param describe /gnesf_mapping NAME). See README.md, "Running the node"."""


def _is_flush(item) -> bool:
    return item is FLUSH or (isinstance(item, tuple) and len(item) == 2 and item[1] is FLUSH)


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
    """The gnesf_mapping node (keyword arguments go to rclpy's Node, e.g. parameter_overrides).

    Raises ConfigError for a parameter that is unknown, of the wrong type or out of range, and
    SystemExit(2) when it cannot configure itself (unmanaged mode)."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        # Attribute names must not shadow rclpy's own (_services, _timers, _subscriptions, ...: the
        # executor serves the parameter and lifecycle services from those lists).
        self.frame_worker: BoundedWorker | None = None  # set before anything can fail (destroy_node)
        self.keyframe_worker: BoundedWorker | None = None
        self.render_worker: BoundedWorker | None = None
        self._declare_parameters()
        self.stats = NodeStats(self.get_logger(), ("color", "depth", "camera_info", "segmentation"))
        self.counts = self.stats.counts
        self._lock = threading.Lock()
        self.mapper = None
        self.outputs: MapPublishers | None = None
        self.diag_pub = None
        self.sync: ApproximateSync | None = None
        self.tf = TransformBuffer()
        self.tf_listener: TfListener | None = None
        self._input_subs: list = []
        self._steady_timers: list = []
        self._trigger_services: list = []
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._last_stamp: float | None = None
        self._last_color_stamp: float | None = None
        self._last_fragment = {"ms": 0.0, "wall": 0.0}
        self._last_input = time.monotonic()  # when the last frame was enqueued (idle flush)
        self._idle_flushed_input: float | None = None  # _last_input of the last idle flush
        self._generation = 0  # bumped by every map reset: keyframes queued before it are stale
        self._map_version = 0
        self._published_version = -1
        self._last_publish = -1e9  # monotonic time of the last full map publication
        self._newest_keyframe_stamp = None  # header stamp of the newest keyframe given to the mapper
        self._map_stamp = None  # header stamp of the newest keyframe in the map (stamps map outputs)
        self._semantic_stamp = None  # ... of the newest keyframe whose window's semantics are fused
        if not self.get_parameter("use_lifecycle").value:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise SystemExit(2)
            self.trigger_activate()

    def _declare_parameters(self) -> None:
        """Declare the table; a params-file key the node does not know, a wrong type or an
        out-of-range value is a ConfigError naming the key (before anything starts)."""
        table = parameter_table()
        for p in table:
            try:
                self.declare_parameter(p.name, p.default, _descriptor(p))
            except ParameterException as e:
                raise ConfigError(f"parameter '{p.name}': {e}") from None
        known = {p.name for p in table} | set(_FOREIGN_PARAMETERS)
        unknown = sorted(n for n in self._parameter_overrides if n not in known and not n.startswith("qos_overrides."))
        if unknown:
            close = {n: difflib.get_close_matches(n, known, 1) for n in unknown}
            raise ConfigError("unknown parameter" + ("s " if len(unknown) > 1 else " ") + ", ".join(
                f"'{n}'" + (f" (did you mean '{close[n][0]}'?)" if close[n] else "") for n in unknown)
                + f" for node {NODE_NAME}; `ros2 param list` or config/mapping.yaml show the known ones")
        self.get_logger().debug("parameters:\n" + "\n".join(
            f"  {p.name}: {self.get_parameter(p.name).value}" for p in table))
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Parameters are read when the node configures: a change after that would do nothing, so
        it is refused with the way to apply it (unconfigured managed nodes take changes)."""
        mine = [p.name for p in params if p.name not in _FOREIGN_PARAMETERS]
        if mine and self.mapper is not None:
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(mine)}: read at configure; set it while unconfigured (use_lifecycle: true, "
                "then deactivate + cleanup + configure) or restart the node with the new value"))
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------- configuration
    def _read_configs(self):
        values = {p.name: self.get_parameter(p.name).value for p in parameter_table()}
        base = load_config(values["mapper_config"]) if values["mapper_config"] else None
        if base is not None:  # parameters left at their defaults must not override the YAML
            defaults = {p.name: p.default for p in parameter_table()}
            values = {n: v for n, v in values.items() if not n.startswith("mapper.") or v != defaults[n]}
        return build_configs(values, base)

    def _build_mapper(self):
        """Mapper with its segmenter and model loaded and warmed up now (a missing file fails at
        start, the first fragment runs at full speed), and the map of load_map_path."""
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
        try:
            mapper.warm_up()  # loads the weights, runs one dummy fragment
        except GnesfError as e:
            raise ConfigError(f"parameter mapper.model.weights = '{cfg.model.weights}' "
                              f"(device '{cfg.model.device}'): {e}") from None
        if self.node_cfg.load_map_path:
            try:
                mapper.load_map(self.node_cfg.load_map_path)
            except GnesfError as e:
                raise ConfigError(f"parameter load_map_path = '{self.node_cfg.load_map_path}': {e}") from None
            self.get_logger().info(f"loaded map {self.node_cfg.load_map_path} ({mapper.map.num_blocks} blocks)")
        return mapper

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        t0 = time.monotonic()
        try:
            self.node_cfg, self.mapper_cfg = self._read_configs()
            self.mapper = self._build_mapper()
        except GnesfError as e:
            self.get_logger().fatal(f"cannot configure: {e}")
            return TransitionCallbackReturn.FAILURE
        c = self.node_cfg
        self.outputs = MapPublishers(self, self.mapper.class_table, c.mesh_max_vertices_per_marker)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._trigger_services = [
            self.create_service(Trigger, "gnesf/save_map", self._on_save),
            self.create_service(Trigger, "gnesf/reset", self._on_reset),
            self.create_service(Trigger, "gnesf/flush", self._on_flush),
        ]
        self.tf_listener = _JumpAwareTfListener(self, self.tf, c.time_jump_threshold_s)
        self._map_version += 1
        self.get_logger().info(f"configured in {time.monotonic() - t0:.1f} s: mode={self.mapper_cfg.mode}, "
                               f"segmenter={self.mapper_cfg.segmenter.backend}, voxel={self.mapper_cfg.map.voxel_size_m} m,"
                               f" processing size {self.mapper_cfg.camera.width}x{self.mapper_cfg.camera.height}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        c = self.node_cfg
        qos = QoSProfile(depth=c.input_qos_depth, reliability=ReliabilityPolicy.BEST_EFFORT
                         if c.input_qos == "sensor_data" else ReliabilityPolicy.RELIABLE)
        use_depth = c.use_depth and self.mapper_cfg.mode != "rgb"
        use_seg = self.mapper_cfg.segmenter.backend == "external"
        self.sync = ApproximateSync(use_depth=use_depth, slop_s=c.sync_slop_s, max_wait_s=c.tf_timeout_s,
                                    use_segmentation=use_seg, jump_back_s=c.time_jump_threshold_s,
                                    on_drop=self._drop)
        keyframe_slots = c.keyframe_queue_fragments * self.mapper_cfg.keyframe.fragment_size
        self.keyframe_worker = BoundedWorker(self._map_keyframe, keyframe_slots, "gnesf-keyframes", pinned=_is_flush,
                                             on_drop=lambda item: self._drop(
                                                 "keyframe_queue_full", f"keyframe queue full ({keyframe_slots} = "
                                                 "keyframe_queue_fragments x fragment_size): the mapper is that far "
                                                 "behind; raise keyframe_queue_fragments or use a lighter mapper.mode"))
        self.frame_worker = BoundedWorker(self._ingest, c.queue_size, "gnesf-frames", pinned=_is_flush,
                                          on_drop=lambda item: self._drop(
                                              "queue_full", f"frame queue full (queue_size = {c.queue_size}): pose "
                                              "look-up and keyframe test fell behind the input; raise queue_size"))
        self.render_worker = BoundedWorker(self._render, 1, "gnesf-renders",
                                           on_drop=lambda item: self.counts.update(("renders_skipped",)))
        for w in (self.keyframe_worker, self.frame_worker, self.render_worker):
            w.start()
        sub = self.create_subscription
        self._input_subs = [sub(Image, c.color_topic, self._on_color, qos),
                            sub(CameraInfo, c.camera_info_topic, self._on_info, qos)]
        if use_depth:
            self._input_subs.append(sub(Image, c.depth_topic, self._on_depth, qos))
        if use_seg:
            self._input_subs.append(sub(Image, c.segmentation_topic, self._on_segmentation, qos))
        if c.pose_source != "tf":
            msg_type = PoseStamped if c.pose_source == "pose" else Odometry
            self._input_subs.append(sub(msg_type, c.pose_topic, self._on_pose, 50))
        timer = self.create_timer
        if c.diagnostics_rate_hz > 0:
            self._steady_timers.append(timer(1.0 / c.diagnostics_rate_hz, self._publish_diagnostics,
                                             clock=self._steady))
        self._steady_timers.append(timer(1.0 / HOUSEKEEPING_HZ, self._on_housekeeping,
                                         clock=self._steady))
        self.get_logger().info(f"ready: mapping {self.resolve_topic_name(c.color_topic)}"
                               + (f" + {self.resolve_topic_name(c.depth_topic)}" if use_depth else "")
                               + (f" + {self.resolve_topic_name(c.segmentation_topic)}" if use_seg else "")
                               + f", poses from {c.pose_source}, mode {self.mapper_cfg.mode}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        for s in self._input_subs:
            self.destroy_subscription(s)
        for t in self._steady_timers:
            self.destroy_timer(t)
        self._input_subs, self._steady_timers = [], []
        self.stop_workers()
        self.frame_worker = self.keyframe_worker = self.render_worker = None
        self.sync = None
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.outputs is not None:
            self.outputs.destroy()
            self.outputs = None
        for srv in self._trigger_services:
            self.destroy_service(srv)
        self._trigger_services = []
        if self.tf_listener is not None:
            self.tf_listener.destroy()
            self.tf_listener = None
        if self.diag_pub is not None:
            self.destroy_publisher(self.diag_pub)
            self.diag_pub = None
        with self._lock:
            self.mapper = None
        self.tf.clear()
        self._last_stamp = self._last_color_stamp = self._newest_keyframe_stamp = None
        self._map_stamp = self._semantic_stamp = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop_workers()
        self.save_on_exit()
        return TransitionCallbackReturn.SUCCESS

    def stop_workers(self) -> None:
        for w in (self.frame_worker, self.keyframe_worker, self.render_worker):
            if w is not None:
                w.stop()

    def destroy_node(self) -> None:
        self.stop_workers()
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
        worker = self.frame_worker
        if worker is not None:
            for item in items:
                worker.put((time.monotonic(), item))
            if items:
                self._last_input = time.monotonic()

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

    # ---------------------------------------------------------------- frames stage
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

    def _check_time(self, stamp: float) -> bool:
        """Duplicate / out-of-order / ignored jumped-back stamps raise InputRejected; -> True when the
        stamp jumped back far enough to reset the map (done once the frame proves valid)."""
        last, c = self._last_stamp, self.node_cfg
        if last is None or stamp > last:
            return False
        if stamp == last:
            raise InputRejected("duplicate_stamp", f"stamp {stamp:.6f} seen twice")
        if last - stamp <= c.time_jump_threshold_s:
            raise InputRejected("out_of_order", f"stamp {stamp:.3f} older than the last mapped {last:.3f}")
        if c.on_time_jump == "ignore":
            raise InputRejected("time_backwards", f"time jumped back {last - stamp:.2f} s (on_time_jump: ignore)")
        return True

    def _ingest(self, queued: tuple[float, SyncedInput]) -> None:
        """Frames stage: pose, conversion, keyframe test. Never waits for the map."""
        received, item = queued
        if item is FLUSH:
            self.keyframe_worker.put(FLUSH)  # behind the keyframes of the frames queued before it
            return
        self.counts["frames_received"] += 1
        try:
            jumped = self._check_time(item.stamp)
            T = self._lookup_pose(item.color.header.frame_id, item.stamp, received)
            if not is_valid_pose(T):
                raise InputRejected("invalid_pose", "transform is not a finite rigid motion")
            frame = to_frame(item, T, self.mapper_cfg.camera, self.node_cfg.max_image_pixels,
                             self.counts["frames_received"], self.mapper.class_table.num_classes)
            if jumped:  # only a frame that can be mapped moves the node's clock (a stray future stamp cannot)
                self.get_logger().warning(f"time jumped back {self._last_stamp - item.stamp:.2f} s: resetting the map "
                                          "(on_time_jump: reset)")
                self._reset_map()
                self.counts["time_jump_resets"] += 1
            self._last_stamp = item.stamp
            self.counts["frames_mapped"] += 1
            if self.mapper.select_keyframe(frame):
                self.counts["keyframes_selected"] += 1
                self.keyframe_worker.put((self._generation, frame, item.color.header))
            n = self.node_cfg.render_every_n
            if n and self.counts["frames_mapped"] % n == 0 and self.outputs.renders_wanted():
                self.render_worker.put((frame, item.color.header))
        except InputRejected as e:
            self._drop(e.reason, str(e))
        except Exception as e:  # noqa: BLE001 - the node must survive any single bad input
            self._drop("internal_error", f"{type(e).__name__}: {e}")

    def _reset_map(self) -> None:
        """Forget the map, the queued keyframes and the keyframe state (a time jump, gnesf/reset)."""
        self._generation += 1
        if self.keyframe_worker is not None:
            self.keyframe_worker.clear()
        with self._lock:
            self.mapper.reset()
            self._map_version += 1
            self._map_stamp = self._semantic_stamp = self._newest_keyframe_stamp = None

    # ---------------------------------------------------------------- keyframes stage
    def _map_keyframe(self, item) -> None:
        if item is FLUSH:
            self._flush()
            return
        generation, frame, header = item
        if generation != self._generation:
            return  # queued before a map reset
        try:
            self._map_step(lambda: self.mapper.add_keyframe(frame), added=header.stamp)
        except Exception as e:  # noqa: BLE001 - as _ingest: the node keeps running
            self._drop("internal_error", f"mapping keyframe {frame.index}: {type(e).__name__}: {e}")

    def _flush(self) -> None:
        try:
            if self._map_step(self.mapper.flush):
                self.counts["flushes"] += 1
            elif self.mapper.pending_keyframes:
                self.get_logger().info(f"flush: {self.mapper.pending_keyframes} keyframe(s) wait for more "
                                       f"(a fragment needs >= {self.mapper.min_fragment_frames})")
        except Exception as e:  # noqa: BLE001 - as _ingest: the node keeps running
            self._drop("internal_error", f"flushing the window: {type(e).__name__}: {e}")

    def _map_step(self, step: Callable[[], object | None], added=None) -> bool:
        """Run a mapper call that may change the map (under the map lock; ``added``: the header stamp
        of the keyframe it adds); publish the changed map (rate-limited), time a mapped fragment.
        -> whether a fragment was mapped."""
        t0 = time.perf_counter()
        with self._lock:
            before = self.mapper.pending_keyframes + (added is not None)
            revision = self.mapper.revision
            if added is not None:
                self._newest_keyframe_stamp = added
            update = step()
            if update is not None:
                self.counts["keyframes_mapped"] += before - self.mapper.pending_keyframes
                self._semantic_stamp = self._newest_keyframe_stamp
            changed = self.mapper.revision != revision  # a fragment, or (rgbd) a keyframe's depth
            if changed:
                self._map_version += 1
                self._map_stamp = self._newest_keyframe_stamp
        if update is not None:
            self._last_fragment = {"ms": (time.perf_counter() - t0) * 1e3, "wall": time.time(),
                                   "stages": dict(update.timings_ms)}
        if changed:
            self._publish_map()
        return update is not None

    def _render(self, item) -> None:
        frame, header = item
        try:
            with self._lock:
                if self.mapper is not None and self.outputs is not None:
                    self.outputs.publish_renders(self.mapper.map, frame.T_world_cam, frame.K, frame.size, header)
        except Exception as e:  # noqa: BLE001
            self._drop("internal_error", f"rendering frame {frame.index}: {type(e).__name__}: {e}")

    # ---------------------------------------------------------------- map outputs
    def _publish_map(self, blocking: bool = True) -> None:
        """Publish the map products if the map changed (at most publish_rate_hz), or the ones a
        new subscriber is waiting for; stamped with the newest keyframe in the map (data time, the
        same clock as the images), or now for a map with none (loaded). The timer calls it
        non-blocking: it never waits on the mapper."""
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
            stamp = self._map_stamp if self._map_stamp is not None else self.get_clock().now().to_msg()
            header = Header(frame_id=self.node_cfg.map_frame, stamp=stamp)
            version = self._map_version
            outputs.publish_map(self.mapper.map, header, only_pending=not (changed and due))
            if changed and due:
                self._published_version, self._last_publish = version, time.monotonic()
        finally:
            self._lock.release()

    def _workers_idle(self) -> bool:
        return all(w is not None and w.idle() for w in (self.frame_worker, self.keyframe_worker))

    def _on_housekeeping(self) -> None:
        """Steady-clock timer: idle flush (once per pause in the input) and map publication."""
        idle = self.node_cfg.idle_flush_s
        if (idle > 0 and self._idle_flushed_input != self._last_input and self._workers_idle()
                and time.monotonic() - self._last_input > idle and self.mapper is not None
                and self.mapper.pending_keyframes):
            self._idle_flushed_input = self._last_input
            self.keyframe_worker.put(FLUSH)
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
        if self.frame_worker is None or self.mapper is None:
            response.success, response.message = False, "not active: nothing to flush"
            return response
        pending = self.mapper.pending_keyframes
        need = self.mapper.min_fragment_frames
        if pending and pending < need and self.mapper.counters["fragments"] == 0 and self.frame_worker.idle():
            response.success = False
            response.message = (f"{pending} keyframe(s) pending, a fragment needs >= {need}: "
                                "they are mapped once more keyframes arrive")
            return response
        self.frame_worker.put((time.monotonic(), FLUSH))  # after the frames already queued
        response.success = True
        response.message = f"mapping the pending keyframes ({pending} now) after the queued frames"
        return response

    def _on_reset(self, request, response):
        if self.frame_worker is not None:
            self.frame_worker.clear()
        self._reset_map()
        self._last_stamp = None
        response.success, response.message = True, "map cleared"
        return response

    # ---------------------------------------------------------------- diagnostics
    def drop_counts(self) -> Counter:
        more = [Counter(tf_rejected=self.tf_listener.counts["rejected"])] if self.tf_listener is not None else []
        return self.stats.drop_counts(*more)

    def diagnostics(self) -> dict[str, str]:
        """The key/values of the /diagnostics status (also handy for tests)."""
        kv = {f"{k}_rate_hz": f"{self.stats.rate_hz(k):.2f}" for k in self.stats.arrivals}
        kv.update({f"{k}_msgs": str(v) for k, v in self.stats.received.items()})
        kv["queue_depth"] = str(self.frame_worker.depth() if self.frame_worker else 0)
        kv["keyframe_queue_depth"] = str(self.keyframe_worker.depth() if self.keyframe_worker else 0)
        kv["mapping_busy"] = str(int(self.keyframe_worker is not None and self.keyframe_worker.busy()))
        kv["sync_pending"] = str(self.sync.pending if self.sync is not None else 0)
        kv.update({k: str(self.counts[k]) for k in ("frames_received", "frames_mapped", "keyframes_selected",
                                                    "keyframes_mapped", "renders_skipped", "time_jump_resets",
                                                    "flushes")})
        last = self._last_fragment
        kv["last_fragment_ms"] = f"{last['ms']:.1f}"
        kv["last_fragment_age_s"] = f"{time.time() - last['wall']:.1f}" if last["wall"] else "never"
        kv.update({f"last_fragment_{stage}_ms": f"{ms:.1f}" for stage, ms in last.get("stages", {}).items()})
        kv["map_changes_unpublished"] = str(int(self._map_version != self._published_version))
        for key, stamp in (("map_stamp", self._map_stamp), ("semantic_stamp", self._semantic_stamp)):
            kv[key] = f"{conv.stamp_to_sec(stamp):.6f}" if stamp is not None else "none"
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


def _params_files(args: list[str]) -> list[str]:
    """The files named by ``--params-file FILE`` inside the ``--ros-args`` sections of ``args``."""
    files, in_ros = [], False
    for i, a in enumerate(args):
        if a == "--ros-args":
            in_ros = True
        elif a == "--":
            in_ros = False
        elif in_ros and a == "--params-file" and i + 1 < len(args):
            files.append(args[i + 1])
    return files


def _start_error(message: str) -> int:
    print(f"gnesf-node: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gnesf-node`` / ``ros2 run gnesf_ros mapping_node``. SIGINT and SIGTERM
    stop it (rclpy's handlers); the map is then saved when save_map_path is set.

    Start-up is the node's error boundary (like the CLIs' run_cli): a bad argument, params file or
    parameter is one line ``gnesf-node: error: ...`` and exit 2; anything else is a bug: its
    traceback and an ``internal error`` line, exit 1."""
    import re
    import traceback

    from rclpy.impl.implementation_singleton import rclpy_implementation

    from gnesf_ros.cli.common import INTERNAL_ERROR_LINE, user_error_message

    args = sys.argv if argv is None else argv
    if any(a in ("-h", "--help") for a in args[1:args.index("--ros-args") if "--ros-args" in args else None]):
        print(USAGE)
        return 0
    for path in _params_files(args):  # rcl's own message for these is a C-level RCLError traceback
        if not os.path.exists(path):
            return _start_error(f"--params-file {path}: no such file")
        if not os.path.isfile(path):
            return _start_error(f"--params-file {path}: not a file")
        if not os.access(path, os.R_OK):
            return _start_error(f"--params-file {path}: not readable (permission denied)")
    try:
        rclpy.init(args=args)
    except rclpy_implementation.RCLError as e:  # malformed --ros-args or params file (rcl parses both here)
        return _start_error(re.sub(r",? at /\S+:\d+", "", f"cannot start: {e}"))  # drop rcl's C source locations
    try:
        node = MappingNode()
    except SystemExit as e:  # the node logged why it cannot configure itself
        rclpy.try_shutdown()
        return int(e.code or 2)
    except Exception as e:  # noqa: BLE001 - the start-up boundary
        rclpy.try_shutdown()
        message = user_error_message(e)  # a parameter or file a person must fix: one line, no traceback
        if message is not None:
            return _start_error(message)
        traceback.print_exc()
        print(f"gnesf-node: {INTERNAL_ERROR_LINE}: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    # One executor thread: callbacks only enqueue, the workers do the rest. rclpy's
    # MultiThreadedExecutor busy-loops in Python while a callback group is busy and held the GIL
    # ~90 % of the time at 30 Hz input, starving the mapper (fragments 4-7x slower than offline).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop_workers()
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
