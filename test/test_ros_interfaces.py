"""The generated tf2_msgs / vision_msgs work over real DDS, and the venv is an ament prefix for gnesf_ros."""
from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags import typesys
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import LabelInfo, VisionClass

from ros_env import ros_domain, spawn, spawn_python, stop

# Receiver in a second process: takes one TFMessage and one LabelInfo, prints them as CDR hex.
_RECEIVER = """
import sys, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy
from rclpy.serialization import serialize_message
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import LabelInfo
rclpy.init()
node = rclpy.create_node("gnesf_test_receiver")
qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
got = {}
node.create_subscription(TFMessage, "test_tf", lambda m: got.setdefault("tf", m), qos)
node.create_subscription(LabelInfo, "test_label_info", lambda m: got.setdefault("label_info", m), qos)
while len(got) < 2:
    rclpy.spin_once(node, timeout_sec=0.1)
for key in ("tf", "label_info"):
    print(key, serialize_message(got[key]).hex(), flush=True)
node.destroy_node()
rclpy.shutdown()
"""


def _transform(sec, nsec, parent, child, t, q) -> TransformStamped:
    m = TransformStamped()
    m.header.stamp.sec, m.header.stamp.nanosec = sec, nsec
    m.header.frame_id, m.child_frame_id = parent, child
    m.transform.translation.x, m.transform.translation.y, m.transform.translation.z = t
    r = m.transform.rotation
    r.x, r.y, r.z, r.w = q
    return m


def _messages() -> tuple[TFMessage, LabelInfo]:
    tf = TFMessage(transforms=[
        _transform(12, 345_678_901, "map", "odom", (1.5, -2.25, 0.125), (0.0, 0.0, 0.6, 0.8)),
        _transform(12, 345_678_901, "odom", "camera_color_optical_frame", (0.1, 0.2, 1.4),
                   (-0.5, 0.5, -0.5, 0.5)),
    ])
    info = LabelInfo(threshold=0.25)
    info.header.stamp.sec, info.header.frame_id = 7, "map"
    info.class_map = [VisionClass(class_id=i, class_name=n)
                      for i, n in enumerate(["wall", "floor", "cabinet", "café table"])]
    info.class_map.append(VisionClass(class_id=65535, class_name="unknown"))
    return tf, info


def test_tf_and_label_info_cross_process_over_dds():
    tf_sent, info_sent = _messages()
    with ros_domain() as env:
        receiver = spawn_python(_RECEIVER, env)
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        try:
            node = rclpy.create_node("gnesf_test_sender", context=ctx)
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_publisher(TFMessage, "test_tf", qos).publish(tf_sent)
            node.create_publisher(LabelInfo, "test_label_info", qos).publish(info_sent)
            executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
            deadline = time.monotonic() + 20.0
            while receiver.poll() is None and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            out, err = stop(receiver)
        finally:
            rclpy.shutdown(context=ctx)
    assert receiver.returncode == 0, f"receiver failed or timed out:\n{err[-2000:]}"
    received = dict(line.split() for line in out.splitlines() if line.strip())
    tf_got = deserialize_message(bytes.fromhex(received["tf"]), TFMessage)
    info_got = deserialize_message(bytes.fromhex(received["label_info"]), LabelInfo)
    assert tf_got == tf_sent
    assert info_got == info_sent
    assert info_got.class_map[3].class_name == "café table"
    assert info_got.class_map[4].class_id == 65535
    assert tf_got.transforms[1].child_frame_id == "camera_color_optical_frame"


def test_tf_message_type_hash_matches_upstream_kilted():
    """RIHS01 hash of the generated TFMessage equals rosbags' independent Kilted type store."""
    store = typesys.get_typestore(typesys.Stores.ROS2_KILTED)
    share = Path(sys.prefix) / "share" / "tf2_msgs" / "msg"
    for name in ("TFMessage", "TF2Error"):
        desc = json.loads((share / f"{name}.json").read_text())
        ours = {h["type_name"]: h["hash_string"] for h in desc["type_hashes"]}
        full = f"tf2_msgs/msg/{name}"
        assert ours[full] == store.hash_rihs01(full)


def _ament_env() -> dict[str, str]:
    return {**os.environ, "AMENT_PREFIX_PATH": sys.prefix}


def test_venv_is_ament_prefix_for_gnesf_ros():
    code = ("from ament_index_python.packages import get_package_share_directory, get_package_prefix;"
            "print(get_package_prefix('gnesf_ros')); print(get_package_share_directory('gnesf_ros'))")
    proc = spawn_python(code, _ament_env())
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    prefix, share = out.split()
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()
    share = Path(share)
    assert ElementTree.parse(share / "package.xml").getroot().findtext("name") == "gnesf_ros"
    for sub in ("launch", "config", "models"):
        assert (share / sub).is_dir(), sub
    assert (share / "config" / "fastdds_shm.xml").is_file()


def test_mapping_node_launcher_runs_node_module_with_venv_python(tmp_path):
    exe = Path(sys.prefix) / "lib" / "gnesf_ros" / "mapping_node"
    assert exe.is_file() and exe.stat().st_mode & stat.S_IXUSR
    # A stand-in gnesf_ros.ros.node earlier on PYTHONPATH shows which interpreter, module and
    # arguments the launcher uses, independent of the real node's start-up.
    stub = tmp_path / "gnesf_ros" / "ros"
    stub.mkdir(parents=True)
    (tmp_path / "gnesf_ros" / "__init__.py").write_text("")
    (stub / "__init__.py").write_text("")
    (stub / "node.py").write_text("import json, sys\nprint(json.dumps([sys.prefix, sys.argv[1:]]))\n")
    env = {**_ament_env(), "PYTHONPATH": str(tmp_path)}
    # cwd = tmp_path: `python -m` puts the working directory first on sys.path.
    proc = spawn([str(exe), "--ros-args", "-p", "x:=1"], env, cwd=str(tmp_path))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    prefix, argv = json.loads(out.strip().splitlines()[-1])
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()
    assert argv == ["--ros-args", "-p", "x:=1"]


def _build_interfaces(env: dict[str, str]) -> str:
    proc = spawn(["bash", "scripts/build_interfaces.sh", sys.prefix, "--dry-run"], env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out


def test_build_interfaces_is_a_noop_when_up_to_date():
    t0 = time.monotonic()
    out = _build_interfaces(dict(os.environ))
    assert "tf2_msgs up to date" in out and "vision_msgs up to date" in out, (
        out + "\n(sources changed since the last `make venv`?)")
    assert time.monotonic() - t0 < 10.0


def test_build_interfaces_defers_to_a_ros_install(tmp_path):
    """A tf2_msgs importable from outside the venv (a sourced ROS 2 install) is not regenerated."""
    fake = tmp_path / "tf2_msgs" / "msg"
    fake.mkdir(parents=True)
    (tmp_path / "tf2_msgs" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    out = _build_interfaces({**os.environ, "PYTHONPATH": str(tmp_path)})
    assert f"tf2_msgs provided by the ROS 2 install at {fake.resolve()}" in out
    assert "vision_msgs up to date" in out
