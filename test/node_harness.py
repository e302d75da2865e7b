"""Helpers of the gnesf_mapping node tests: start the node, publish frames, watch its outputs.

- ``start_node(env, overrides)``: the node in its own process (``python -m gnesf_ros.ros.node``)
  with config/mapping.yaml plus a YAML overlay.
- ``FramePublisher``: colour/depth/camera_info/segmentation + /tf for one frame (from arrays).
- ``Probe``: an in-process subscriber of the node's outputs and /diagnostics.
- ``mesh_from_markers``: the received mesh back as a LabeledMesh (for 3D metrics).
- ``synthetic_frames``: posed views of a synthetic scene in memory (for tests that publish themselves;
  the end-to-end test replays a bag with ``gnesf-bag play`` instead).
- ``LogPump``: drains a started node's merged output in a thread and notes when marker lines appear.
- ``ReplayProbe``: a Probe that also records wall arrival times of every mesh message (with its
  stamp), of every /diagnostics message of the node and of each colour image (for latency figures;
  benchmarks/node_replay.py).
"""
from __future__ import annotations

import re
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "test"))
from ros_env import spawn, stop  # noqa: E402

OPTICAL_FRAME = "camera_color_optical_frame"


def start_node(env: dict, overrides: dict, tmp_path: Path, name: str = "node",
               extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """The node with config/mapping.yaml and ``overrides`` (dotted names) layered on top."""
    overlay = tmp_path / f"{name}_params.yaml"
    overlay.write_text(yaml.safe_dump({"/**": {"ros__parameters": overrides}}))
    cmd = [sys.executable, "-m", "gnesf_ros.ros.node", "--ros-args", "--params-file",
           str(ROOT / "config" / "mapping.yaml"), "--params-file", str(overlay), *extra_args]
    return spawn(cmd, env, stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """SIGINT the node; returns its output (stdout and stderr merged)."""
    out, _ = stop(proc, timeout)
    return out or ""


# ----------------------------------------------------------------------------- publishing
class FramePublisher:
    """Publishes frames the way a camera driver + localisation would (reliable QoS)."""

    def __init__(self, node, ns: str = ""):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        p = node.create_publisher
        self.color = p(Image, f"{ns}/camera/color/image_raw", qos)
        self.depth = p(Image, f"{ns}/camera/depth/image_rect_raw", qos)
        self.info = p(CameraInfo, f"{ns}/camera/color/camera_info", qos)
        self.seg = p(Image, f"{ns}/segmentation/probabilities", qos)
        self.tf = p(TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self._TFMessage, self._CameraInfo = TFMessage, CameraInfo

    def wait_for_subscribers(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        pubs = (self.color, self.depth, self.info, self.seg, self.tf)
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in pubs):
                time.sleep(0.3)  # let the remaining endpoint matches settle
                return
            time.sleep(0.05)
        raise TimeoutError("the node never subscribed to the camera topics")

    def publish_tf(self, T: np.ndarray, stamp: float, frame: str = OPTICAL_FRAME, quaternion=None) -> None:
        from gnesf_ros.ros import conversions as conv

        msg = conv.transform_stamped(T, "map", frame, stamp)
        if quaternion is not None:
            r = msg.transform.rotation
            r.x, r.y, r.z, r.w = (float(v) for v in quaternion)
        self.tf.publish(self._TFMessage(transforms=[msg]))

    def camera_info(self, K: np.ndarray, size: tuple[int, int], stamp: float, frame: str = OPTICAL_FRAME):
        from gnesf_ros.ros import conversions as conv

        info = self._CameraInfo(header=conv.make_header(stamp, frame), height=size[0], width=size[1])
        info.k = [float(v) for v in np.asarray(K).reshape(-1)]
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        return info

    def publish(self, stamp: float, rgb: np.ndarray, depth: np.ndarray | None, labels: np.ndarray | None,
                K: np.ndarray, T: np.ndarray | None, frame: str = OPTICAL_FRAME, color_msg=None,
                info_size: tuple[int, int] | None = None, seg_msg=None) -> None:
        """tf (if T), camera_info, depth (32FC1 m), segmentation (mono8 class index), colour (rgb8)
        last. ``color_msg`` / ``seg_msg`` replace the colour / segmentation image (bad-input tests)."""
        from gnesf_ros.ros import conversions as conv

        header = conv.make_header(stamp, frame)
        if T is not None:
            self.publish_tf(T, stamp, frame)
        self.info.publish(self.camera_info(K, info_size or rgb.shape[:2], stamp, frame))
        if depth is not None:
            self.depth.publish(conv.numpy_to_image(depth.astype(np.float32), "32FC1", header))
        if seg_msg is not None:
            self.seg.publish(seg_msg)
        elif labels is not None:
            self.seg.publish(conv.numpy_to_image(labels.astype(np.uint8), "mono8", header))
        self.color.publish(color_msg if color_msg is not None else conv.numpy_to_image(rgb, "rgb8", header))


# ----------------------------------------------------------------------------- watching
class Probe:
    """Subscribes to the node's outputs in this process and keeps what arrives."""

    def __init__(self, ns: str = "", renders: bool = True, name: str = "gnesf_test_probe", maps: bool = True,
                 publish: bool = True):
        """Watches the node ``{ns}/gnesf_mapping``: its /diagnostics, its label images (``renders``)
        and its mesh + occupancy grid (``maps``). ``publish``: also create ``self.publisher``
        (a FramePublisher on the camera topics) for tests that feed the node themselves."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import OccupancyGrid
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from visualization_msgs.msg import MarkerArray

        self.node = rclpy.create_node(name)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.lock = threading.Lock()
        self.mesh = None
        self.occupancy = None
        self.label_stamps: list[float] = []
        self.labels: list[tuple[int, str, int, int, str]] = []  # (stamp ns, frame_id, height, width, encoding)
        self.diag: dict[str, str] = {}
        self.diag_count = 0
        self.ns = ns
        sub = self.node.create_subscription
        self._output_subs = []  # the node's own outputs (not /diagnostics, which others may publish)
        if maps:
            self._output_subs += [sub(MarkerArray, f"{ns}/gnesf/semantic_mesh", self._set("mesh"), latched),
                                  sub(OccupancyGrid, f"{ns}/gnesf/occupancy", self._set("occupancy"), latched)]
        if renders:
            self._output_subs.append(sub(Image, f"{ns}/gnesf/label_image", self._on_label, 100))
        sub(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.publisher = FramePublisher(self.node, ns) if publish else None
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _set(self, attr: str):
        def cb(msg):
            with self.lock:
                setattr(self, attr, msg)
        return cb

    def _on_label(self, msg) -> None:
        stamp = msg.header.stamp
        with self.lock:
            self.label_stamps.append(stamp.sec + stamp.nanosec * 1e-9)
            self.labels.append((stamp.sec * 10**9 + stamp.nanosec, msg.header.frame_id, msg.height, msg.width,
                                msg.encoding))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name == f"{self.ns}/gnesf_mapping: mapper":
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in status.values}
                    self.diag_count += 1

    def value(self, key: str, default: float = 0.0) -> float:
        with self.lock:
            v = self.diag.get(key)
        try:
            return float(v) if v is not None else default
        except ValueError:
            return default

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        with self.lock:
            diag = dict(self.diag)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last diagnostics: {diag}")

    def wait_matched(self, timeout: float = 60.0, settle_s: float = 0.3) -> None:
        """Wait until the node's output publishers are matched with this probe's subscriptions
        (the node renders label images only while someone subscribes), then ``settle_s`` more so
        the node's side of the match completes too."""
        self.wait(lambda: all(s.get_publisher_count() > 0 for s in self._output_subs), timeout,
                  "the node's output publishers")
        time.sleep(settle_s)

    def total_drops(self) -> float:
        with self.lock:
            return sum(float(v) for k, v in self.diag.items() if k.startswith("drops_"))

    def wait_diag(self, key: str, at_least: float, timeout: float = 10.0) -> None:
        self.wait(lambda: self.value(key) >= at_least, timeout, f"{key} >= {at_least}")

    def call(self, service: str, timeout: float = 10.0):
        """Call a std_srvs/Trigger service of the node; returns the response."""
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, f"{self.ns}/{service}")
        if not client.wait_for_service(timeout_sec=timeout):
            raise AssertionError(f"service {service} not available")
        future = client.call_async(Trigger.Request())
        self.wait(future.done, timeout, f"the reply of {service}")
        return future.result()

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=1.0)
        self._thread.join(timeout=2.0)
        self.node.destroy_node()


# ----------------------------------------------------------------------------- scenes
def mesh_from_markers(msg, table):
    """MarkerArray of TRIANGLE_LIST markers (per-vertex class colours) -> LabeledMesh with NYU40
    labels recovered from the palette colours (unknown grey -> 0)."""
    from gnesf_ros.data.ply import LabeledMesh

    pts, cols = [], []
    for m in msg.markers:
        if m.action != m.ADD or not m.points:
            continue
        pts.append(np.array([(p.x, p.y, p.z) for p in m.points], np.float32))
        cols.append(np.array([(c.r, c.g, c.b) for c in m.colors], np.float32))
    v = np.concatenate(pts) if pts else np.zeros((0, 3), np.float32)
    rgb = np.round(np.concatenate(cols) * 255).astype(np.int64) if cols else np.zeros((0, 3), np.int64)
    key = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    pal = np.asarray(table.colors, np.int64)
    pal_key = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    lut = {int(k): int(n) for k, n in zip(pal_key, table.nyu40_ids)}
    labels = np.array([lut.get(int(k), 0) for k in key], np.int32)
    faces = np.arange(len(v), dtype=np.int32).reshape(-1, 3)
    return LabeledMesh(vertices=v, faces=faces, colors=rgb.astype(np.uint8), labels=labels)


def synthetic_frames(seed: int, frames: int, stride: int, size: tuple[int, int]):
    """Every ``stride``-th view of a synthetic scene's camera path (gnesf_ros.data.synthetic),
    rendered at ``size`` with seeded sensor noise -> (frames, GT LabeledMesh). Each Frame's
    ``labels`` and ``probs`` hold the GT class indices (what a test sends as the external
    segmentation). Deterministic."""
    from gnesf_ros.classes import default_class_table
    from gnesf_ros.data.synthetic import build_scene, camera_path, default_intrinsics
    from gnesf_ros.types import Frame

    lut = default_class_table().nyu40_to_index_lut()
    scene = build_scene(seed)
    K = default_intrinsics(size)
    out = []
    for i, T in enumerate(camera_path(scene, frames * stride, seed)[::stride]):
        rgb, depth, nyu = scene.render(T, K, size, noise_seed=seed * 1000 + i)
        labels = lut[nyu]
        out.append(Frame(stamp=float(i), rgb=rgb, K=K, T_world_cam=T, depth=depth, labels=labels, probs=labels,
                         index=i))
    return out, scene


# ----------------------------------------------------------------------------- replay measurements
class LogPump:
    """Reads a process's output (``start_node`` merges stderr into stdout) in a thread, so a chatty
    node never blocks on a full pipe, and notes the ``time.monotonic()`` at which a line matching
    each of ``markers`` (regular expressions) first appeared. ``stop()`` ends the process like
    ``stop_node`` and returns everything it printed."""

    def __init__(self, proc: subprocess.Popen, markers: tuple[str, ...] = (r"\bready\b",)):
        self.proc = proc
        self.lines: list[str] = []
        self.first_seen: dict[str, float] = {}
        self._markers = [(m, re.compile(m)) for m in markers]
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in self.proc.stdout:
            t = time.monotonic()
            with self._lock:
                self.lines.append(line)
                for name, pattern in self._markers:
                    if name not in self.first_seen and pattern.search(line):
                        self.first_seen[name] = t

    def text(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def stop(self, timeout: float = 10.0) -> str:
        """SIGINT, kill after ``timeout``; returns the process's whole output."""
        if self.proc.poll() is None:
            self.proc.send_signal(2)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(5.0)
        return self.text()


def cdr_stamp_ns(raw: bytes, offset: int) -> int | None:
    """``builtin_interfaces/Time`` at byte ``offset`` of a serialised (CDR) message -> integer ns
    (None when the message is too short). Offsets: 4 for a message that starts with a Header
    (after the 4-byte encapsulation header), 8 for the first Marker of a MarkerArray (after its
    sequence length)."""
    if len(raw) < offset + 8:
        return None
    fmt = "<iI" if raw[1] == 1 else ">iI"  # encapsulation 0x0001 CDR_LE, 0x0000 CDR_BE
    sec, nsec = struct.unpack_from(fmt, raw, offset)
    return sec * 10**9 + nsec


class ReplayProbe(Probe):
    """A Probe (diagnostics as usual; no label images, no occupancy grid) that also records, as
    ``time.monotonic()`` wall times of arrival in this process:

    - every ``gnesf/semantic_mesh`` message (reliable, transient local, depth 1), taken raw so that
      the arrival is stamped before any deserialisation: ``mesh_arrivals`` [(wall s, header stamp
      ns of the first marker)], the last message's CDR in ``mesh_raw`` (``last_mesh()``
      deserialises it);
    - every /diagnostics status of the node: ``diag_times``, the newest key/values in ``diag``,
      the maxima of numeric keys in ``diag_max``;
    - each colour image stamp on ``color_topic`` (raw, reliable, depth ``color_depth``):
      ``color_arrivals`` {stamp ns: wall s of the first arrival}.

    ``wait_matched`` waits for the node's mesh publisher."""

    def __init__(self, ns: str = "", color_topic: str = "/camera/color/image_raw", color_depth: int = 1000,
                 name: str = "gnesf_replay_probe"):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from visualization_msgs.msg import MarkerArray

        # set before Probe starts spinning: its /diagnostics callback (ours) uses them
        self.mesh_arrivals: list[tuple[float, int | None]] = []
        self.mesh_raw: bytes | None = None
        self.diag_times: list[float] = []
        self.diag_max: dict[str, float] = {}
        self.semantic_stamps: list[tuple[float, float]] = []  # (arrival, diagnostics semantic_stamp s)
        self.color_arrivals: dict[int, float] = {}
        super().__init__(ns=ns, renders=False, name=name, maps=False, publish=False)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        sub = self.node.create_subscription
        self._output_subs.append(sub(MarkerArray, f"{ns}/gnesf/semantic_mesh", self._on_mesh_raw, latched, raw=True))
        self._color_sub = sub(Image, color_topic, self._on_color_raw,
                              QoSProfile(depth=color_depth, reliability=ReliabilityPolicy.RELIABLE), raw=True)

    def _on_mesh_raw(self, raw: bytes) -> None:
        t = time.monotonic()
        stamp = cdr_stamp_ns(raw, 8)
        with self.lock:
            self.mesh_arrivals.append((t, stamp))
            self.mesh_raw = raw

    def _on_color_raw(self, raw: bytes) -> None:
        t = time.monotonic()
        stamp = cdr_stamp_ns(raw, 4)
        if stamp is not None:
            with self.lock:
                self.color_arrivals.setdefault(stamp, t)

    def _on_diag(self, msg) -> None:
        t = time.monotonic()
        for status in msg.status:
            if status.name == f"{self.ns}/gnesf_mapping: mapper":
                kv = {kv.key: kv.value for kv in status.values}
                with self.lock:
                    self.diag = kv
                    self.diag_count += 1
                    self.diag_times.append(t)
                    if kv.get("semantic_stamp", "none") != "none":
                        self.semantic_stamps.append((t, float(kv["semantic_stamp"])))
                    for k, v in kv.items():
                        try:
                            x = float(v)
                        except ValueError:
                            continue
                        self.diag_max[k] = max(x, self.diag_max.get(k, x))

    def last_mesh(self):
        """The last mesh message received, deserialised (a MarkerArray), or None."""
        from rclpy.serialization import deserialize_message
        from visualization_msgs.msg import MarkerArray

        with self.lock:
            raw = self.mesh_raw
        return deserialize_message(raw, MarkerArray) if raw is not None else None

    def snapshot(self) -> dict:
        """Copies of everything recorded so far (under the lock)."""
        with self.lock:
            return {"diag": dict(self.diag), "diag_times": list(self.diag_times), "diag_max": dict(self.diag_max),
                    "semantic_stamps": list(self.semantic_stamps),
                    "mesh_arrivals": list(self.mesh_arrivals), "color_arrivals": dict(self.color_arrivals)}
