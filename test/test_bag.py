"""gnesf-bag: frames -> rosbag2 (MCAP / sqlite3) -> values back; playback over real DDS."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from gnesf_ros.cli.bag import main as bag_main
from gnesf_ros.data import scannet
from gnesf_ros.errors import DataError
from gnesf_ros.geometry.tf_buffer import TransformBuffer, make_transform
from gnesf_ros.ros.bag import (DEFAULT_START_TIME_S, BagLayout, bag_summary, header_stamps_ns, read_frames,
                               write_bag)
from gnesf_ros.types import Frame

H, W = 60, 80
K = np.array([[55.0, 0, 39.5], [0, 56.0, 29.5], [0, 0, 1]])
START_NS = int(DEFAULT_START_TIME_S * 1e9)


def make_frames(n: int = 3, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        depth = rng.uniform(0.3, 5.0, (H, W)).astype(np.float32)
        depth[0, :3] = [0.0, np.nan, 70.0]  # invalid, NaN, beyond 16-bit millimetres
        yaw = 0.3 * i
        T = make_transform((0.5 * i, -1.0, 1.4), (0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)))
        frames.append(Frame(stamp=0.1 * i + 0.05 * (i == 2), rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                            K=K, T_world_cam=T, depth=depth, index=10 * i))
    return frames


def _raw_messages(bag: Path) -> dict[str, list]:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    out: dict[str, list] = {}
    with Reader(bag) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, ts.deserialize_cdr(raw, conn.msgtype)))
    return out


def _wheel_hash(type_name: str) -> str:
    pkg, _, name = type_name.split("/")
    desc = json.loads((Path(sys.prefix) / "share" / pkg / "msg" / f"{name}.json").read_text())
    return next(h["hash_string"] for h in desc["type_hashes"] if h["type_name"] == type_name)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_convert_hand_made_frames_and_read_back(tmp_path, storage):
    frames = make_frames()
    bag = tmp_path / "scene.bag"
    summary = write_bag(frames, bag, storage=storage, rate_hz=30.0)
    assert summary.storage == storage
    assert summary.topics == {
        "/camera/color/image_raw": ("sensor_msgs/msg/Image", 3), "/camera/depth/image_rect_raw": ("sensor_msgs/msg/Image", 3),
        "/camera/color/camera_info": ("sensor_msgs/msg/CameraInfo", 3), "/tf": ("tf2_msgs/msg/TFMessage", 3),
        "/tf_static": ("tf2_msgs/msg/TFMessage", 1)}
    stamps = [START_NS + round(i * 1e9 / 30) for i in range(3)]
    msgs = _raw_messages(bag)
    buf = TransformBuffer()
    for topic in ("/tf_static", "/tf"):
        for _, m in msgs[topic]:
            for tr in m.transforms:
                t, r = tr.transform.translation, tr.transform.rotation
                buf.set_transform(tr.header.frame_id, tr.child_frame_id,
                                  tr.header.stamp.sec + tr.header.stamp.nanosec * 1e-9,
                                  translation=(t.x, t.y, t.z), quaternion=(r.x, r.y, r.z, r.w),
                                  static=topic == "/tf_static")
    for i, f in enumerate(frames):
        t_log, color = msgs["/camera/color/image_raw"][i]
        assert t_log == stamps[i] == color.header.stamp.sec * 10**9 + color.header.stamp.nanosec
        assert (color.encoding, color.height, color.width, color.step) == ("rgb8", H, W, 3 * W)
        assert color.header.frame_id == "camera_color_optical_frame"
        np.testing.assert_array_equal(color.data.reshape(H, W, 3), f.rgb)
        _, depth = msgs["/camera/depth/image_rect_raw"][i]
        assert (depth.encoding, depth.step, depth.is_bigendian) == ("16UC1", 2 * W, 0)
        mm = depth.data.view("<u2").reshape(H, W)
        assert mm[0, :3].tolist() == [0, 0, 0]
        np.testing.assert_array_equal(mm[1:], np.round(f.depth[1:].astype(np.float64) * 1000).astype(np.uint16))
        _, info = msgs["/camera/color/camera_info"][i]
        assert (info.height, info.width, info.distortion_model) == (H, W, "plumb_bob")
        np.testing.assert_array_equal(info.k.reshape(3, 3), K)
        np.testing.assert_array_equal(info.p.reshape(3, 4)[:, :3], K)
        T = buf.lookup("map", "camera_color_optical_frame", stamps[i] * 1e-9)
        np.testing.assert_allclose(T, f.T_world_cam, atol=1e-9)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == storage
    for t in meta["topics_with_message_count"]:
        md = t["topic_metadata"]
        qos = md["offered_qos_profiles"][0]
        assert qos["reliability"] == "reliable"
        assert qos["durability"] == ("transient_local" if md["name"] == "/tf_static" else "volatile")
        assert md["type_description_hash"] == _wheel_hash(md["type"])  # what rclpy publishers announce
    for f, g in zip(frames, read_frames(bag)):
        np.testing.assert_array_equal(g.rgb, f.rgb)
        valid = f.depth[1:]
        np.testing.assert_allclose(g.depth[1:], valid, atol=5e-4 + 1e-6)
        assert g.depth[0, :3].tolist() == [0, 0, 0]
        np.testing.assert_allclose(g.T_world_cam, f.T_world_cam, atol=1e-9)
        np.testing.assert_array_equal(g.K, K)


def test_read_frames_resized(tmp_path):
    frames = make_frames(1)
    write_bag(frames, tmp_path / "b")
    (g,) = read_frames(tmp_path / "b", size=(30, 40))
    assert g.rgb.shape == (30, 40, 3) and g.depth.shape == (30, 40)
    # half size: f / 2, c' = (c + 0.5) / 2 - 0.5
    np.testing.assert_allclose(g.K, [[27.5, 0, 19.5], [0, 28.0, 14.5], [0, 0, 1]])
    src = frames[0].depth[10:12, 14:16].reshape(-1)  # nearest neighbour: one of these 2x2 pixels (mm-quantised)
    assert np.abs(src - g.depth[5, 7]).min() <= 5e-4 + 1e-6
    np.testing.assert_allclose(g.rgb[5, 7], frames[0].rgb[10:12, 14:16].reshape(-1, 3).mean(0), atol=0.51)


def test_stamps_from_file(tmp_path):
    frames = make_frames()
    write_bag(frames, tmp_path / "b", rate_hz=None, start_time_s=100.0)
    got = [g.stamp for g in read_frames(tmp_path / "b")]
    np.testing.assert_allclose(got, [100.0, 100.1, 100.25], atol=1e-9)


def test_bad_input_leaves_no_bag(tmp_path):
    frames = make_frames()
    frames[2].stamp = frames[1].stamp  # duplicate stamp in file mode
    with pytest.raises(DataError, match="must increase"):
        write_bag(frames, tmp_path / "dup", rate_hz=None)
    frames = make_frames()
    frames[1].T_world_cam = np.full((4, 4), np.nan)
    with pytest.raises(DataError, match="invalid pose"):
        write_bag(frames, tmp_path / "nan")
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    write_bag(make_frames(1), tmp_path / "ok")
    with pytest.raises(DataError, match="exists already"):
        write_bag(make_frames(1), tmp_path / "ok")
    with pytest.raises(DataError, match="not a ROS 2 bag"):
        bag_summary(tmp_path)


def test_cli_convert_scannet_scene_and_info(tmp_path, capsys):
    frames = make_frames(4, seed=1)
    with scannet.ScanNetWriter(tmp_path / "scene0000_00", "scene0000_00", K, (H, W), K, (H, W)) as w:
        for f in frames:
            w.add(f.rgb, f.depth, f.T_world_cam)
    out = tmp_path / "scene.bag"
    assert bag_main(["convert", str(tmp_path / "scene0000_00"), str(out), "--format", "sqlite3", "--stride", "2"]) == 0
    src = list(scannet.open_scene(tmp_path / "scene0000_00", stride=2))
    got = list(read_frames(out))
    assert len(got) == len(src) == 2
    for a, b in zip(src, got):
        np.testing.assert_array_equal(b.rgb, a.rgb)
        np.testing.assert_allclose(b.depth, a.depth, atol=5e-4 + 1e-6)
        np.testing.assert_allclose(b.T_world_cam, a.T_world_cam, atol=1e-9)
    capsys.readouterr()
    assert bag_main(["info", str(out)]) == 0
    assert "/camera/color/image_raw" in capsys.readouterr().out
    assert bag_main(["convert", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- playback over DDS
def test_play_to_a_subscriber_in_another_process(tmp_path):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from gnesf_ros.ros import conversions as conv
    from ros_env import ros_domain, spawn_python, stop

    frames = make_frames(3)
    bag = tmp_path / "tiny"
    write_bag(frames, bag, rate_hz=30.0)
    got: dict[str, list] = {}
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    with ros_domain() as env:
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        try:
            node = rclpy.create_node("bag_test_subscriber", context=ctx)
            for topic, typ, qos in [("/camera/color/image_raw", Image, reliable),
                                    ("/camera/depth/image_rect_raw", Image, reliable),
                                    ("/camera/color/camera_info", CameraInfo, reliable), ("/tf", TFMessage, reliable),
                                    ("/tf_static", TFMessage, latched), ("/clock", Clock, reliable)]:
                node.create_subscription(typ, topic, lambda m, t=topic: got.setdefault(t, []).append(m), qos)
            executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
            player = spawn_python("import sys; from gnesf_ros.cli.bag import main; sys.exit(main())", env,
                                  args=["play", str(bag), "--clock", "--wait-for-subscribers", "20"])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (player.poll() is None or
                                                   len(got.get("/camera/color/image_raw", [])) < 3):
                executor.spin_once(timeout_sec=0.05)
            for _ in range(20):
                executor.spin_once(timeout_sec=0.01)
            out, err = stop(player)
        finally:
            rclpy.shutdown(context=ctx)
    assert player.returncode == 0, err[-2000:]
    assert "published 13 messages" in out
    images = got["/camera/color/image_raw"]
    assert len(images) == 3 and len(got["/camera/depth/image_rect_raw"]) == 3 and len(got["/tf"]) == 3
    assert got["/tf_static"][0].transforms[0].child_frame_id == "camera_color_optical_frame"
    for f, msg in zip(frames, images):
        np.testing.assert_array_equal(conv.image_to_rgb(msg), f.rgb)
    stamps = [conv.stamp_to_sec(m.header.stamp) for m in images]
    np.testing.assert_allclose(np.diff(stamps), 1 / 30, atol=1e-6)
    clock = [conv.stamp_to_sec(c.clock) for c in got["/clock"]]
    assert clock == sorted(clock) and clock[-1] == pytest.approx(stamps[-1], abs=1e-6)
    np.testing.assert_allclose(conv.image_to_depth_m(got["/camera/depth/image_rect_raw"][0])[1:],
                               frames[0].depth[1:], atol=5e-4 + 1e-6)


def test_mcap_decodes_with_an_independent_reader(tmp_path):
    """mcap-ros2-support decodes every message from the embedded ros2msg schemas (as rosbag2's
    MCAP plugin and Foxglove do), not from rosbags' type store."""
    frames = make_frames(2)
    write_bag(frames, tmp_path / "b")
    (mcap_file,) = (tmp_path / "b").glob("*.mcap")
    counts: dict[str, int] = {}
    with open(mcap_file, "rb") as fh:
        for schema, channel, _, msg in make_reader(fh, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == "/camera/color/image_raw":
                assert schema.name == "sensor_msgs/msg/Image" and channel.message_encoding == "cdr"
                i = counts[channel.topic] - 1
                np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(H, W, 3), frames[i].rgb)
            if channel.topic == "/tf":
                assert msg.transforms[0].child_frame_id == "camera_link"
    assert counts == {"/tf_static": 1, "/tf": 2, "/camera/color/camera_info": 2, "/camera/color/image_raw": 2,
                      "/camera/depth/image_rect_raw": 2}


def test_play_loop_at_rate_stops_on_sigint(tmp_path):
    from ros_env import ros_domain, spawn_python, stop

    write_bag(make_frames(3), tmp_path / "b", rate_hz=10.0)  # 0.2 s of bag time per pass
    with ros_domain() as env:
        player = spawn_python("import sys; from gnesf_ros.cli.bag import main; sys.exit(main())", env,
                              args=["play", str(tmp_path / "b"), "--loop", "--rate", "2.0",
                                    "--wait-for-subscribers", "0"])  # nobody listens: don't wait
        # Start-up can take many seconds on a busy machine or a fresh venv (bytecode compilation):
        # signal only once the player says it is playing, then let it run a few passes.
        started = time.monotonic()
        first = player.stderr.readline()
        while "playing" not in first and first and time.monotonic() - started < 120:
            first = player.stderr.readline()
        assert "playing" in first, first
        time.sleep(2.0)  # passes of 0.1 s each
        out, err = stop(player, timeout=30)
    assert player.returncode == 0, err[-2000:]
    m = re.search(r"published (\d+) messages in ([\d.]+) s \((\d+) pass", out)
    assert m, out + err
    published, wall, passes = int(m.group(1)), float(m.group(2)), int(m.group(3))
    assert passes >= 3 and published >= 13 * (passes - 1)
    assert passes <= wall / 0.1 + 2  # paced at 2x: a pass takes >= 0.1 s


# ----------------------------------------------------------------------------- recorded segmentation (--labels)
SEG_TOPIC = "/segmentation/probabilities"


def make_labelled_frames(n: int = 3) -> list[Frame]:
    frames = make_frames(n)
    rng = np.random.default_rng(7)
    for f in frames:
        f.labels = rng.integers(0, 20, (H, W), dtype=np.uint8)
        f.labels[:5, :7] = 255  # unknown
    return frames


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_labels_round_trip_as_external_segmentation(tmp_path, storage):
    from gnesf_ros.segmentation.base import segment_frames
    from gnesf_ros.segmentation.external import ExternalSegmenter, probs_from_labels

    frames = make_labelled_frames()
    bag = tmp_path / "labels.bag"
    summary = write_bag(frames, bag, storage=storage, labels=True)
    assert summary.topics[SEG_TOPIC] == ("sensor_msgs/msg/Image", 3)
    msgs = _raw_messages(bag)
    for f, (t_col, col), (t_seg, seg) in zip(frames, msgs["/camera/color/image_raw"], msgs[SEG_TOPIC]):
        assert t_seg == t_col and seg.header.stamp == col.header.stamp and seg.header.frame_id == col.header.frame_id
        assert (seg.encoding, seg.height, seg.width, seg.step) == ("mono8", H, W, W)
        np.testing.assert_array_equal(seg.data.reshape(H, W), f.labels)
    stamps = [START_NS + round(i * 1e9 / 30) for i in range(3)]
    assert header_stamps_ns(bag, SEG_TOPIC) == header_stamps_ns(bag, "/camera/color/image_raw") == stamps
    with pytest.raises(DataError, match="no topic /nope"):
        header_stamps_ns(bag, "/nope")
    got = list(read_frames(bag))
    assert len(got) == 3
    for f, g in zip(frames, got):
        assert g.labels is None  # segmenter output, not ground truth
        np.testing.assert_array_equal(np.asarray(g.probs).reshape(H, W), f.labels)
    # What gnesf-map --segmenter external computes from the bag: the label images' soft probabilities.
    probs = segment_frames(ExternalSegmenter(label_confidence=0.9), got)
    np.testing.assert_allclose(probs, np.stack([probs_from_labels(f.labels, 20, 0.9) for f in frames]), atol=1e-6)
    # Resized frames keep the segmentation as recorded; the external segmenter resizes it (nearest).
    (small, *_) = read_frames(bag, size=(30, 40))
    assert small.rgb.shape == (30, 40, 3) and np.asarray(small.probs).reshape(H, W).shape == (H, W)
    p = segment_frames(ExternalSegmenter(), [small])[0]
    assert p.shape == (30, 40, 20)
    half = frames[0].labels[::2, ::2]  # nearest neighbour at half size
    known = half < 20
    np.testing.assert_array_equal(p.argmax(-1)[known], half[known])
    np.testing.assert_allclose(p[~known], 1 / 20, atol=1e-6)  # unknown (255): uniform


def test_labels_missing_or_malformed_is_a_clear_error(tmp_path):
    frames = make_labelled_frames()
    frames[1].labels = None
    with pytest.raises(DataError, match="no label images"):
        write_bag(frames, tmp_path / "a", labels=True)
    frames = make_labelled_frames()
    frames[2].labels = frames[2].labels[:, :-1]
    with pytest.raises(DataError, match="labels must be HxW uint8"):
        write_bag(frames, tmp_path / "b", labels=True)
    assert list(tmp_path.iterdir()) == []
    write_bag(make_frames(1), tmp_path / "plain", labels=False)  # frames without labels: fine when not asked
    assert SEG_TOPIC not in bag_summary(tmp_path / "plain").topics
    assert next(read_frames(tmp_path / "plain")).probs is None


def test_cli_convert_labels_of_a_scannet_scene(tmp_path, capsys):
    from gnesf_ros.classes import default_class_table

    frames = make_frames(3, seed=2)
    nyu = np.random.default_rng(3).choice([0, 1, 2, 5, 39], (3, H, W)).astype(np.uint16)  # NYU40 ids, 0 unannotated
    with scannet.ScanNetWriter(tmp_path / "scene0001_00", "scene0001_00", K, (H, W), K, (H, W)) as w:
        for f, lab in zip(frames, nyu):
            w.add(f.rgb, f.depth, f.T_world_cam, lab)
    out = tmp_path / "scene.bag"
    assert bag_main(["convert", str(tmp_path / "scene0001_00"), str(out), "--labels",
                     "--labels-topic", "/seg/labels"]) == 0
    assert "/seg/labels" in capsys.readouterr().out
    lut = default_class_table().nyu40_to_index_lut()
    got = list(read_frames(out, layout=BagLayout(segmentation_topic="/seg/labels")))
    assert len(got) == 3
    for lab, g in zip(nyu, got):
        expected = lut[lab]  # 20-class indices, 255 for unannotated / unmapped
        assert (expected == 255).any() and (expected < 20).any()
        np.testing.assert_array_equal(np.asarray(g.probs).reshape(H, W), expected)
    assert bag_main(["convert", str(tmp_path / "scene0001_00"), str(tmp_path / "nolabels")]) == 0
    assert "/seg/labels" not in bag_summary(tmp_path / "nolabels").topics


# ----------------------------------------------------------------------------- waiting for subscribers
COLOR_TOPIC = "/camera/color/image_raw"


def test_play_by_default_waits_for_the_subscribers_that_exist(tmp_path):
    """Default wait over real DDS: a subscriber of the colour topic (and /clock) only, created before
    the player starts, receives every colour image of the bag; the player does not wait for the
    topics nobody subscribes to (segmentation, depth, ...) and says what it waited for; /clock
    starts at the bag's first stamp (not 0, not wall time)."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from gnesf_ros.data.synthetic import generate_scene
    from ros_env import ros_domain, spawn, stop

    scene = generate_scene(tmp_path / "data", seed=2003, frames=24, size=(48, 64))
    bag = tmp_path / "scene.bag"
    assert bag_main(["convert", str(scene), str(bag), "--labels"]) == 0
    assert SEG_TOPIC in bag_summary(bag).topics
    color_stamps = header_stamps_ns(bag, COLOR_TOPIC)

    def ns(stamp) -> int:
        return stamp.sec * 10**9 + stamp.nanosec

    got_color: list[int] = []
    got_clock: list[int] = []
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    with ros_domain() as env:
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        try:
            node = rclpy.create_node("wait_test_subscriber", context=ctx)
            node.create_subscription(Image, COLOR_TOPIC, lambda m: got_color.append(ns(m.header.stamp)), reliable)
            node.create_subscription(Clock, "/clock", lambda m: got_clock.append(ns(m.clock)), reliable)
            executor = SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
            player = spawn([sys.executable, "-m", "gnesf_ros.cli.bag", "play", str(bag), "--clock"], env)
            deadline = time.monotonic() + 45
            exited = None
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.02)
                if player.poll() is not None:
                    exited = exited or time.monotonic()
                    if len(got_color) >= len(color_stamps) or time.monotonic() - exited > 2.0:
                        break
            out, err = stop(player)
        finally:
            rclpy.shutdown(context=ctx)
    assert player.returncode == 0, err[-3000:]
    assert f"{COLOR_TOPIC} {len(color_stamps)}" in out, out
    assert got_color == color_stamps, (len(got_color), len(color_stamps), err[-3000:])  # none lost to discovery
    m = re.search(r"waited ([\d.]+) s(.*)", err)
    assert m, err[-3000:]
    waited, line = float(m.group(1)), m.group(0)
    assert "timeout" not in line and waited < 4.5, line  # default timeout 5 s: it did not wait for segmentation
    subscribed, idle = line.split("; no subscriber: ")
    assert f"{COLOR_TOPIC} (1)" in subscribed and "/clock (1)" in subscribed, line
    assert SEG_TOPIC in idle and "/camera/depth/image_rect_raw" in idle, line
    assert got_clock and got_clock[0] == color_stamps[0] and min(got_clock) == color_stamps[0], got_clock[:5]
    assert got_clock == sorted(got_clock) and got_clock[-1] == color_stamps[-1]


class _FakePublisher:
    def __init__(self, topic: str, matched_after: dict[float, int], t0: float):
        self.topic, self.matched_after, self.t0 = topic, matched_after, t0

    def get_subscription_count(self) -> int:
        age = time.monotonic() - self.t0
        return max([n for t, n in self.matched_after.items() if age >= t], default=0)


class _FakeGraph:
    def __init__(self, counts: dict[str, int]):
        self.counts = counts

    def count_subscribers(self, topic: str) -> int:
        return self.counts.get(topic, 0)


def test_wait_for_subscribers_waits_only_for_existing_subscribers():
    from gnesf_ros.ros.bag_play import wait_for_subscribers

    t0 = time.monotonic()
    pubs = [("/color", _FakePublisher("/color", {0.3: 1, 0.5: 2}, t0)),  # two readers, matched one by one
            ("/seg", _FakePublisher("/seg", {}, t0))]  # nobody subscribes
    res = wait_for_subscribers(_FakeGraph({"/color": 2}), pubs, timeout_s=5.0, settle_s=0.3)
    assert not res.timed_out and 0.75 <= res.waited_s < 2.0, res
    assert res.format().endswith("s for subscribers: /color (2); no subscriber: /seg"), res.format()
    # Nobody at all: bounded by the timeout; a reader the graph knows but the publisher never
    # matches (e.g. incompatible QoS) also ends at the timeout, and the line says so.
    res = wait_for_subscribers(_FakeGraph({}), pubs, timeout_s=0.3, settle_s=0.1)
    assert res.timed_out and 0.3 <= res.waited_s < 1.0 and "no subscriber on any topic" in res.format()
    res = wait_for_subscribers(_FakeGraph({"/seg": 1}), pubs, timeout_s=0.3, settle_s=0.1)
    assert res.timed_out and "/seg (0 of 1 matched)" in res.format(), res.format()


# ----------------------------------------------------------------------------- one conversion for node and bags
@pytest.mark.parametrize("size", [(120, 160), (30, 40), (50, 100)])
def test_read_frames_is_the_node_conversion(tmp_path, size):
    """A frame read from a bag equals the node's to_frame on the same messages, at a processing
    size other than the bag's (larger, smaller, other aspect ratio)."""
    from gnesf_ros.config import CameraConfig
    from gnesf_ros.ros import conversions as conv
    from gnesf_ros.ros.inputs import to_frame
    from gnesf_ros.ros.sync import SyncedInput

    frames = make_labelled_frames(3)
    bag = tmp_path / "b"
    write_bag(frames, bag, labels=True)
    msgs = _raw_messages(bag)
    got = list(read_frames(bag, size=size))
    assert len(got) == 3
    for i, (f, g) in enumerate(zip(frames, got)):
        color, depth = msgs[COLOR_TOPIC][i][1], msgs["/camera/depth/image_rect_raw"][i][1]
        info, seg = msgs["/camera/color/camera_info"][i][1], msgs[SEG_TOPIC][i][1]
        assert isinstance(color.data, np.ndarray)  # rosbags' numpy uint8[] fields
        item = SyncedInput(conv.stamp_to_sec(color.header.stamp), color, depth, info, seg)
        ref = to_frame(item, f.T_world_cam, CameraConfig(width=size[1], height=size[0]), 4096 * 4096, i, 20)
        assert g.rgb.shape == (*size, 3) and g.depth.shape == size and g.index == ref.index == i
        np.testing.assert_array_equal(g.rgb, ref.rgb)
        np.testing.assert_array_equal(g.depth, ref.depth)
        np.testing.assert_array_equal(g.K, ref.K)
        np.testing.assert_array_equal(g.probs, ref.probs)
        assert g.stamp == ref.stamp
        np.testing.assert_allclose(g.T_world_cam, f.T_world_cam, atol=1e-9)


def _write_bag_with_bad_camera_info(scene: Path, bag: Path, wrong_size: set[int], bad_k: set[int]) -> int:
    """The scene's frames (with labels) as a bag whose camera_info is the wrong size for the frames
    in ``wrong_size`` (a half-resolution camera_info) and has fx = 0 / NaN for those in ``bad_k``."""
    from gnesf_ros.ros.bag import BagWriter

    class Writer(BagWriter):
        def _camera_info(self, stamp_ns, K, size):
            if self.num_frames in wrong_size:
                size = (size[0] // 2, size[1] // 2)
            return super()._camera_info(stamp_ns, K, size)

    n = 0
    with Writer(bag, labels=True) as w:
        for i, f in enumerate(scannet.open_scene(scene)):
            if i in bad_k:
                f.K = f.K.copy()
                f.K[0, 0] = 0.0 if i % 2 else np.nan
            w.add(f, START_NS + round(i * 1e9 / 30))
            n += 1
    return n


def test_gnesf_map_skips_frames_with_bad_camera_info(tmp_path, caplog):
    """Frames the node would drop (camera_info size differs from the image, K not a pinhole) are
    skipped by gnesf-map with one warning per reason, counted in BagFrameSource.skipped."""
    from gnesf_ros.cli.map import main as map_main
    from gnesf_ros.data.synthetic import generate_scene
    from gnesf_ros.ros.bag import BagFrameSource

    scene = generate_scene(tmp_path / "data", seed=2002, frames=40, size=(120, 160))
    bag = tmp_path / "bad_info.bag"
    n = _write_bag_with_bad_camera_info(scene, bag, wrong_size={3, 10, 17}, bad_k={5, 6})
    assert n == 40
    src = BagFrameSource(bag)
    with caplog.at_level(logging.WARNING):
        got = list(src)
    assert len(got) == n - 5 and [g.index for g in got] == list(range(n - 5))
    assert src.skipped == Counter(camera_info_mismatch=3, bad_camera_info=2)
    reasons = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("camera_info_mismatch" in m for m in reasons) == 1, reasons
    assert sum("bad_camera_info" in m for m in reasons) == 1, reasons

    caplog.clear()
    cfg = tmp_path / "small.yaml"
    cfg.write_text("camera: {width: 160, height: 120}\nkeyframe: {fragment_size: 4}\n")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert map_main([str(bag), "--out", str(out), "--config", str(cfg), "--mode", "baseline_bayesian",
                         "--segmenter", "external", "--heldout-every", "0"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    mismatch = [m for m in warnings if "camera_info_mismatch" in m]
    assert len(mismatch) == 1 and str(bag) in mismatch[0] and "camera_info is 80x60, colour image 160x120" in mismatch[0]
    assert sum("bad_camera_info" in m for m in warnings) == 1, warnings
    assert json.loads((out / "metrics.json").read_text())["frames"] == n - 5


@pytest.mark.parametrize("missing", ["/camera/color/camera_info", "/camera/color/image_raw"])
def test_gnesf_map_refuses_a_bag_without_camera_info_or_colour(tmp_path, missing):
    """The topic recorded under another name: gnesf-map exits non-zero with one line naming the bag
    and the missing topic, no traceback."""
    renamed = {"info_topic": "/other/camera_info"} if missing.endswith("camera_info") else {"color_topic": "/other/image"}
    bag = tmp_path / "partial.bag"
    write_bag(make_frames(2), bag, layout=BagLayout(**renamed))
    assert missing not in bag_summary(bag).topics
    proc = subprocess.run([sys.executable, "-m", "gnesf_ros.cli.map", str(bag), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("gnesf-map: error: ") and str(bag) in errors[0] and missing in errors[0], errors
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match=re.escape(missing)):
        next(read_frames(bag))


# ----------------------------------------------------------------------------- data files checked, chunk CRCs
def _data_file(bag: Path) -> Path:
    (f,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    return f


def _info_error(bag: Path, capsys) -> str:
    """gnesf-bag info on a bad bag: exit 2, nothing on stdout, exactly one line on stderr."""
    capsys.readouterr()
    assert bag_main(["info", str(bag)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gnesf-bag: error: "), err
    return lines[0]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("damage", ["deleted", "emptied", "truncated"])
def test_info_reads_the_data_files_not_only_the_metadata(tmp_path, capsys, storage, damage):
    """metadata.yaml alone says nothing about the data: a bag whose data file is gone, empty or cut
    is refused with one line naming the file."""
    bag = tmp_path / "b"
    write_bag(make_frames(3), bag, storage=storage)
    f = _data_file(bag)
    if damage == "deleted":
        f.unlink()
    elif damage == "emptied":
        f.write_bytes(b"")
    else:
        f.write_bytes(f.read_bytes()[: f.stat().st_size * 2 // 3])
    line = _info_error(bag, capsys)
    assert str(f) in line, line
    assert {"deleted": "missing", "emptied": "empty", "truncated": "truncated" if storage == "mcap" else "malformed"}[
        damage] in line, line
    with pytest.raises(DataError, match=re.escape(str(bag))):
        list(read_frames(bag))


def test_info_checks_counts_and_metadata_text(tmp_path, capsys):
    bag = tmp_path / "b"
    write_bag(make_frames(3), bag)
    meta = bag / "metadata.yaml"
    text = meta.read_text()
    capsys.readouterr()
    assert bag_main(["info", str(bag)]) == 0
    assert re.search(r"data: +13 messages in 1 file\(s\) .* 1 of 1 chunks CRC-checked, summary CRC-checked",
                     capsys.readouterr().out)
    # a topic count the data does not hold (e.g. a bag cut by a crash, metadata written by hand)
    doc = yaml.safe_load(text)
    for t in doc["rosbag2_bagfile_information"]["topics_with_message_count"]:
        if t["topic_metadata"]["name"] == "/camera/color/image_raw":
            t["message_count"] = 4
    meta.write_text(yaml.safe_dump(doc))
    line = _info_error(bag, capsys)
    assert "/camera/color/image_raw" in line and "4" in line and "3" in line, line
    # not UTF-8; malformed topic entries
    meta.write_bytes(text.encode().replace(b"storage_identifier", b"storage_\xff\xfeidentifier"))
    line = _info_error(bag, capsys)
    assert str(meta) in line and "UTF-8" in line, line
    meta.write_text(text.replace("topic_metadata:", "topic_metadata_x:", 1))
    line = _info_error(bag, capsys)
    assert str(meta) in line and "topics_with_message_count" in line, line


def _chunks(mcap_file: Path) -> list:
    from mcap.records import Chunk
    from mcap.stream_reader import StreamReader

    with open(mcap_file, "rb") as fh:
        return [r for r in StreamReader(fh, emit_chunks=True).records if isinstance(r, Chunk)]


def test_bags_are_written_with_chunk_crcs(tmp_path, capsys):
    """Every MCAP chunk carries the CRC-32 of its records (rosbags alone writes 0: "not computed"),
    checked by mcap's own reader; the bag still reads."""
    import zlib

    from mcap.records import Message
    from mcap.stream_reader import StreamReader

    frames = make_frames(60)  # > 1 MiB of records: several chunks
    write_bag(frames, tmp_path / "b")
    f = _data_file(tmp_path / "b")
    chunks = _chunks(f)
    assert len(chunks) >= 2
    for c in chunks:
        assert c.compression == "" and c.uncompressed_crc != 0
        assert c.uncompressed_crc == zlib.crc32(c.data) and len(c.data) == c.uncompressed_size
    with open(f, "rb") as fh:
        assert sum(isinstance(r, Message) for r in StreamReader(fh, validate_crcs=True).records) == 4 * 60 + 1
    # the footer's summary CRC (channels, schemas, chunk index), computed as mcap's own Writer does
    import io

    from mcap.writer import Writer as McapRefWriter

    def footer_crc(raw: bytes) -> tuple[int, int]:
        summary_start = int.from_bytes(raw[-8 - 20:-8 - 12], "little")
        return int.from_bytes(raw[-8 - 4:-8], "little"), zlib.crc32(raw[summary_start:-8 - 4])

    ref = io.BytesIO()
    mw = McapRefWriter(ref)
    mw.start()
    cid = mw.register_channel("/t", "cdr", mw.register_schema("s", "ros2msg", b"int32 a"))
    mw.add_message(cid, 1, b"abcd", 1)
    mw.finish()
    stored, computed = footer_crc(ref.getvalue())
    assert stored == computed != 0  # the formula is mcap's
    stored, computed = footer_crc(f.read_bytes())
    assert stored == computed != 0
    got = list(read_frames(tmp_path / "b"))
    assert len(got) == 60
    np.testing.assert_array_equal(got[-1].rgb, frames[-1].rgb)
    assert (f"{len(chunks)} of {len(chunks)} chunks CRC-checked, summary CRC-checked"
            in bag_summary(tmp_path / "b").data.format())


def test_a_flipped_byte_inside_a_chunk_is_refused(tmp_path, capsys):
    """One corrupt byte in an image inside a chunk: info, read_frames, gnesf-bag play and gnesf-map
    all refuse the bag with one line, instead of mapping the corrupt image."""
    from gnesf_ros.ros.bag_play import play

    frames = make_frames(3)
    bag = tmp_path / "b"
    write_bag(frames, bag)
    f = _data_file(bag)
    data = bytearray(f.read_bytes())
    at = data.find(frames[1].rgb.tobytes()) + 1000
    assert at > 1000
    data[at] ^= 0x01
    f.write_bytes(bytes(data))
    line = _info_error(bag, capsys)
    assert str(f) in line and "checksum" in line, line
    with pytest.raises(DataError, match=re.escape(str(bag)) + ".*checksum"):
        list(read_frames(bag))
    with pytest.raises(DataError, match="checksum"):
        play(bag, wait_for_subscribers_s=0.0)
    proc = subprocess.run([sys.executable, "-m", "gnesf_ros.cli.map", str(bag), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("gnesf-map: error: ") and str(bag) in errors[0], proc.stderr
    assert "checksum" in errors[0], errors
    # a flipped byte in the summary section (the channel declarations and chunk index readers seek by)
    data[at] ^= 0x01
    summary_start = int.from_bytes(data[-8 - 20:-8 - 12], "little")
    data[summary_start + 40] ^= 0x01
    f.write_bytes(bytes(data))
    line = _info_error(bag, capsys)
    assert str(f) in line and "summary" in line, line
    with pytest.raises(DataError, match="summary"):
        list(read_frames(bag))


def test_interrupted_convert_leaves_no_bag(tmp_path, capsys):
    """A convert interrupted mid-way (Ctrl-C, a bad frame, SIGKILL) leaves nothing at OUT: the bag is
    written in a hidden sibling folder and renamed into place when complete."""
    def frames_then_interrupt():
        yield from make_frames(2)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_bag(frames_then_interrupt(), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
    # SIGKILL while frames are being written
    script = ("import sys, time; sys.path.insert(0, sys.argv[2]); from test_bag import make_frames; "
              "from gnesf_ros.ros.bag import write_bag\n"
              "def gen():\n    for i, f in enumerate(make_frames(50)):\n"
              "        if i == 5: print('writing', flush=True); time.sleep(60)\n        yield f\n"
              "write_bag(gen(), sys.argv[1])\n")
    out = tmp_path / "killed.bag"
    proc = subprocess.Popen([sys.executable, "-c", script, str(out), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        hidden = [p for p in tmp_path.iterdir() if p.name.startswith(".killed.bag.")]
        assert len(hidden) == 1 and list(hidden[0].iterdir())  # the bag being written, beside OUT
    finally:
        proc.kill()
        proc.wait(30)
    assert not out.exists()
    # OUT under a file: one line
    (tmp_path / "file").write_text("x")
    with scannet.ScanNetWriter(tmp_path / "scene0000_00", "scene0000_00", K, (H, W), K, (H, W)) as w:
        for fr in make_frames(2):
            w.add(fr.rgb, fr.depth, fr.T_world_cam)
    capsys.readouterr()
    assert bag_main(["convert", str(tmp_path / "scene0000_00"), str(tmp_path / "file" / "b")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and str(tmp_path / "file") in err, err
