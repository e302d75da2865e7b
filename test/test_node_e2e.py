"""End to end over real DDS: player process -> gnesf_mapping process -> subscriber (this test).

The player publishes views of a synthetic scene (gnesf_ros.data.synthetic; every 10th frame of a
20 s camera path, 240x320): colour rgb8, depth 32FC1, camera_info, the ground-truth class image as
the external segmentation and /tf map -> optical frame, at 30 Hz. The
received mesh's 3D mIoU against the scene's GT mesh must reach 90 % of the offline Mapper's on
the same frames. Mapper mode / segmenter are parameters (env GNESF_E2E_MODE, default
baseline_average; GNESF_E2E_SEGMENTER, default external) so the learned modes can be checked
once their weights exist.

Run as a script for the measurements in the report:
    .venv/bin/python test/test_node_e2e.py bench   (throughput node vs offline, transport latency)
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_harness import ROOT, Probe, mesh_from_markers, start_node, stop_node, synthetic_frames  # noqa: E402
from ros_env import ros_domain, spawn  # noqa: E402

import rclpy  # noqa: E402

MODE = os.environ.get("GNESF_E2E_MODE", "baseline_average")
SEGMENTER = os.environ.get("GNESF_E2E_SEGMENTER", "external")
SIZE = (240, 320)
FRAMES = 60
STRIDE = 10
RATE_HZ = 30.0
START_S = 1_700_000_000.0
SEED = 2000  # test split


def node_overrides(**extra) -> dict:
    cfg = {"mapper.mode": MODE, "mapper.segmenter.backend": SEGMENTER,
           "mapper.keyframe.fragment_size": 3, "mapper.keyframe.min_translation_m": 0.05,
           "mapper.keyframe.min_rotation_deg": 10.0,
           "mapper.camera.height": SIZE[0], "mapper.camera.width": SIZE[1],
           "input_qos": "reliable", "queue_size": 1000, "tf_timeout_s": 2.0, "diagnostics_rate_hz": 4.0}
    cfg.update(extra)
    return cfg


def mapper_config():
    """The MapperConfig the node builds from node_overrides() (same code path: build_configs)."""
    from gnesf_ros.ros.parameters import build_configs, parameter_table

    values = {p.name: p.default for p in parameter_table()}
    values.update({k: v for k, v in node_overrides().items()})
    return build_configs(values)[1]


def offline_map(frames):
    """Offline Mapper on ``frames`` -> (mapper after flush, fragments before the flush, seconds)."""
    from gnesf_ros.pipeline import Mapper

    mapper = Mapper(mapper_config())
    t0 = time.perf_counter()
    for f in frames:
        mapper.add_frame(f)
    streamed = mapper.stats["fragments"]
    mapper.flush()
    return mapper, streamed, time.perf_counter() - t0


def test_node_maps_a_played_scene_like_the_offline_mapper(tmp_path):
    from gnesf_ros.classes import default_class_table
    from gnesf_ros.eval.metrics import semantic_3d

    table = default_class_table()
    frames, scene = synthetic_frames(SEED, FRAMES, STRIDE, SIZE)
    offline, fragments, _ = offline_map(frames)
    gt = scene.gt_mesh()
    miou_offline = semantic_3d(offline.map.extract_mesh(), gt, table)["miou"]
    stamps = {round(START_S + i / RATE_HZ, 6) for i in range(FRAMES)}

    with ros_domain() as env:
        rclpy.init()
        probe = node = player = None
        try:
            probe = Probe()
            node = start_node(env, node_overrides(), tmp_path)
            player = spawn([sys.executable, str(ROOT / "test" / "node_harness.py"), "play", str(SEED),
                            str(SIZE[0]), str(SIZE[1]), str(FRAMES), str(STRIDE), str(RATE_HZ), str(START_S)], env)
            probe.wait(lambda: probe.value("mapper_fragments") >= fragments
                       and probe.value("frames_received") >= FRAMES and probe.value("queue_depth", 1) == 0,
                       60, f"{FRAMES} frames and {fragments} fragments mapped")
            probe.wait(lambda: probe.value("map_changes_unpublished", 1) == 0, 10, "the final map published")
            time.sleep(0.3)  # diagnostics may overtake the mesh
            probe.wait(lambda: probe.mesh is not None and probe.occupancy is not None, 10, "mesh + occupancy")
            assert player.wait(20) == 0, player.communicate()[0]
            with probe.lock:
                mesh_msg, grid, label_stamps = probe.mesh, probe.occupancy, list(probe.label_stamps)
            diag = dict(probe.diag)
        finally:
            out = stop_node(node) if node is not None else ""
            if probe is not None:
                probe.close()
            rclpy.shutdown()
    assert diag["frames_mapped"] == str(FRAMES), (diag, out[-3000:])
    assert all(v == "0" for k, v in diag.items() if k.startswith("drops_")), diag
    # Label renders: one per mapped frame (render_every_n 1), each stamped like its source frame.
    assert len(label_stamps) >= FRAMES - 2 and {round(s, 6) for s in label_stamps} <= stamps
    assert mesh_msg.markers and all(m.header.frame_id == "map" for m in mesh_msg.markers)
    cells = np.asarray(grid.data, np.int8)
    assert (cells == 100).any() and (cells == 0).any() and grid.info.resolution == pytest.approx(0.04)
    miou_node = semantic_3d(mesh_from_markers(mesh_msg, table), gt, table)["miou"]
    print(f"3D mIoU: node {miou_node:.3f}, offline {miou_offline:.3f} (mode {MODE}, segmenter {SEGMENTER})")
    assert miou_offline > 0.3  # GT labels as segmentation: the offline map itself must be good
    assert miou_node >= 0.9 * miou_offline


# ----------------------------------------------------------------------------- measurements
_LATENCY_PUB = """
import sys, time, numpy as np, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from gnesf_ros.ros import conversions as conv
rclpy.init()
node = rclpy.create_node("gnesf_latency_pub")
pub = node.create_publisher(Image, "latency_image", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
while pub.get_subscription_count() == 0:
    time.sleep(0.05)
time.sleep(0.5)
rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
n = int(sys.argv[1])
for i in range(n):
    t0 = time.monotonic()
    pub.publish(conv.numpy_to_image(rgb, "rgb8", conv.make_header(time.time(), "cam")))
    time.sleep(max(0.0, 1 / 30 - (time.monotonic() - t0)))
time.sleep(0.5)
rclpy.shutdown()
"""


def measure_latency(frames: int = 300, shm: bool = True) -> dict:
    """640x480 rgb8 at 30 Hz between two processes: delivery latency (ms) p50/p95 and count."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from ros_env import spawn_python

    with ros_domain() as env:
        if not shm:
            env = {k: v for k, v in env.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
            os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
        rclpy.init()
        lat = []
        node = rclpy.create_node("gnesf_latency_sub")
        node.create_subscription(Image, "latency_image", lambda m: lat.append(
            time.time() - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)),
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        pub = spawn_python(_LATENCY_PUB, env, [str(frames)])
        while pub.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.05)
        for _ in range(10):
            rclpy.spin_once(node, timeout_sec=0.05)
        node.destroy_node()
        rclpy.shutdown()
    ms = np.array(lat) * 1e3
    return {"received": len(ms), "sent": frames, "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95))}


def measure_throughput(tmp_path: Path, frames: int = 120, stride: int = 5, rate_hz: float = 60.0,
                       maps: bool = True) -> dict:
    """Keyframes per second: node (input faster than it maps, nothing dropped) vs offline Mapper.
    ``maps``: subscribe to the mesh and occupancy grid (else the node skips computing them)."""
    data, _ = synthetic_frames(SEED, frames, stride, SIZE)
    offline, _, offline_s = offline_map(data)
    keyframes = offline.stats["keyframes"]
    with ros_domain() as env:
        rclpy.init()
        probe = Probe(renders=False, maps=maps)
        node = start_node(env, node_overrides(diagnostics_rate_hz=20.0, render_every_n=0), tmp_path)
        player = spawn([sys.executable, str(ROOT / "test" / "node_harness.py"), "play", str(SEED), str(SIZE[0]),
                        str(SIZE[1]), str(frames), str(stride), str(rate_hz), str(START_S)], env)
        try:
            probe.wait(lambda: probe.value("frames_received") > 0, 120, "the first frame")
            t0 = time.monotonic()
            probe.wait(lambda: probe.value("frames_mapped") >= frames, 300, "all frames mapped")
            node_s = time.monotonic() - t0
            node_keyframes = probe.value("mapper_keyframes")
            player.wait(30)
        finally:
            stop_node(node)
            probe.close()
            rclpy.shutdown()
    return {"maps_subscribed": maps, "keyframes": keyframes, "offline_kf_per_s": keyframes / offline_s,
            "node_keyframes": node_keyframes, "node_kf_per_s": node_keyframes / node_s,
            "offline_s": offline_s, "node_s": node_s}


def measure_rss(tmp_path: Path, minutes: float = 5.0) -> dict:
    """Node RSS (MiB) after each minute of ``minutes`` of looped replay (map reset each loop)."""
    samples = {}
    with ros_domain() as env:
        rclpy.init()
        probe = Probe(renders=True)
        node = start_node(env, node_overrides(queue_size=10, input_qos="sensor_data"), tmp_path)
        player = spawn([sys.executable, str(ROOT / "test" / "node_harness.py"), "play", str(SEED), str(SIZE[0]),
                        str(SIZE[1]), str(FRAMES), str(STRIDE), str(RATE_HZ), str(START_S), str(minutes * 60 + 30)], env)
        try:
            probe.wait(lambda: probe.value("frames_received") > 0, 120, "the first frame")
            t0 = time.monotonic()
            for m in [float(m) for m in range(1, int(minutes) + 1)]:
                time.sleep(max(0.0, t0 + 60 * m - time.monotonic()))
                samples[f"rss_mb_{m:g}min"] = probe.value("rss_mb")
                samples[f"resets_{m:g}min"] = probe.value("time_jump_resets")
                samples[f"frames_mapped_{m:g}min"] = probe.value("frames_mapped")
                samples[f"drops_{m:g}min"] = probe.total_drops()
                print(samples, flush=True)
        finally:
            player.kill()
            stop_node(node)
            probe.close()
            rclpy.shutdown()
    return samples


if __name__ == "__main__":
    import json
    import tempfile

    what = sys.argv[1] if len(sys.argv) > 1 else "bench"
    tmp = Path(tempfile.mkdtemp(prefix="gnesf_node_bench_"))
    if what in ("bench", "latency"):
        print("latency SHM profile:", json.dumps(measure_latency(shm=True)), flush=True)
        print("latency default transports:", json.dumps(measure_latency(shm=False)), flush=True)
    if what in ("bench", "throughput"):
        print("throughput:", json.dumps(measure_throughput(tmp, maps=False)), flush=True)
        (tmp / "maps").mkdir()
        print("throughput:", json.dumps(measure_throughput(tmp / "maps", maps=True)), flush=True)
    if what == "rss":
        print("rss:", json.dumps(measure_rss(tmp, float(sys.argv[2]) if len(sys.argv) > 2 else 5.0)), flush=True)
