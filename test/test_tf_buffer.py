"""TransformBuffer: interpolation, chains, limits and errors against hand-computed transforms;
TfListener filling it over real DDS."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from gnesf_ros.errors import GnesfError
from gnesf_ros.geometry.tf_buffer import (
    ExtrapolationError, InvalidTransformError, LookupTransformError, TransformBuffer,
    invert_transform, make_transform, matrix_to_quaternion, quaternion_to_matrix, slerp)

S = math.sqrt(0.5)
Q_YAW90 = (0.0, 0.0, S, S)  # +90 deg about z
Q_OPTICAL = (-0.5, 0.5, -0.5, 0.5)  # base (x fwd, y left, z up) -> optical (x right, y down, z fwd)


def rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def apply(T: np.ndarray, p) -> np.ndarray:
    return T[:3, :3] @ np.asarray(p, float) + T[:3, 3]


def test_quaternion_matrix_known_values_and_round_trip():
    np.testing.assert_allclose(quaternion_to_matrix(Q_YAW90), rz(90), atol=1e-12)
    R_opt = quaternion_to_matrix(Q_OPTICAL)
    # optical z (forward) is base x; optical x (right) is base -y; optical y (down) is base -z
    np.testing.assert_allclose(R_opt @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(R_opt @ [1, 0, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(R_opt @ [0, 1, 0], [0, 0, -1], atol=1e-12)
    rots = Rotation.random(50, random_state=0)
    for R, q_ref in zip(rots.as_matrix(), rots.as_quat()):
        q = matrix_to_quaternion(R)
        assert q[3] >= 0
        np.testing.assert_allclose(abs(q @ q_ref), 1.0, atol=1e-9)  # same rotation up to sign
        np.testing.assert_allclose(quaternion_to_matrix(q), R, atol=1e-9)


@pytest.mark.parametrize("q", [(0, 0, 0, 0), (0, 0, 0, 2.0), (float("nan"), 0, 0, 1), (0, 0, 0.2, 1.0)])
def test_bad_quaternions_raise(q):
    with pytest.raises(InvalidTransformError):
        quaternion_to_matrix(q)


def test_slightly_denormalised_quaternion_is_normalised():
    R = quaternion_to_matrix((0, 0, 0, 1.004))  # |q|^2 = 1.008: inside tf2's 1e-2 tolerance
    np.testing.assert_allclose(R, np.eye(3), atol=1e-12)


def test_non_rotation_matrix_raises():
    with pytest.raises(InvalidTransformError):
        matrix_to_quaternion(np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(InvalidTransformError):
        matrix_to_quaternion(np.eye(3) * 2)


def test_slerp_matches_scipy():
    rots = Rotation.random(2 * 20, random_state=1).as_quat().reshape(20, 2, 4)
    for (q0, q1), t in zip(rots, np.linspace(0, 1, 20)):
        ref = Slerp([0, 1], Rotation.from_quat([q0, q1]))([t]).as_matrix()[0]
        np.testing.assert_allclose(quaternion_to_matrix(slerp(q0, q1, t)), ref, atol=1e-9)


def test_interpolation_lerp_and_slerp_hand_computed():
    buf = TransformBuffer()
    buf.set_transform("map", "odom", 10.0, translation=(0, 0, 0), quaternion=(0, 0, 0, 1))
    buf.set_transform("map", "odom", 11.0, translation=(2, -4, 1), quaternion=Q_YAW90)
    T = buf.lookup("map", "odom", 10.25)
    np.testing.assert_allclose(T[:3, 3], [0.5, -1.0, 0.25], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], rz(22.5), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("map", "odom", 11.0), make_transform((2, -4, 1), Q_YAW90), atol=1e-12)


def _robot(buf: TransformBuffer) -> None:
    """map -> odom (static offset), odom -> base_link (moving), base_link -> camera (static)."""
    buf.set_transform("map", "odom", 0.0, translation=(10, 0, 0), quaternion=(0, 0, 0, 1), static=True)
    buf.set_transform("odom", "base_link", 1.0, translation=(0, 0, 0), quaternion=(0, 0, 0, 1))
    buf.set_transform("odom", "base_link", 3.0, translation=(4, 0, 0), quaternion=Q_YAW90)
    buf.set_transform("base_link", "camera_optical", 0.0, translation=(0.2, 0, 1.0), quaternion=Q_OPTICAL,
                      static=True)
    buf.set_transform("base_link", "lidar", 0.0, translation=(0, 0, 2.0), quaternion=(0, 0, 0, 1), static=True)


def test_chain_lookup_through_the_tree():
    buf = TransformBuffer()
    _robot(buf)
    # t = 3: base at odom (4, 0, 0) facing +y (yaw 90). A point 1 m in front of the camera is
    # base (1.2, 0, 1.0) -> odom (4, 1.2, 1.0) -> map (14, 1.2, 1.0).
    T = buf.lookup("map", "camera_optical", 3.0)
    np.testing.assert_allclose(apply(T, [0, 0, 1]), [14, 1.2, 1.0], atol=1e-12)
    # camera x (right) points along base -y = odom +x after the yaw
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [1, 0, 0], atol=1e-12)
    # t = 2: half way: base at (2, 0, 0), yaw 45 deg; camera origin at base (0.2, 0, 1)
    T2 = buf.lookup("map", "camera_optical", 2.0)
    c = math.cos(math.radians(45))
    np.testing.assert_allclose(T2[:3, 3], [12 + 0.2 * c, 0.2 * c, 1.0], atol=1e-12)
    # reverse direction is the inverse
    np.testing.assert_allclose(buf.lookup("camera_optical", "map", 2.0), invert_transform(T2), atol=1e-12)
    # siblings: lidar origin seen from the camera: base (0, 0, 2) is camera (0, -1.0, -0.2)
    np.testing.assert_allclose(apply(buf.lookup("camera_optical", "lidar", 2.0), [0, 0, 0]),
                               [0, -1.0, -0.2], atol=1e-12)
    np.testing.assert_allclose(buf.lookup("lidar", "lidar", 2.0), np.eye(4))


def test_latest_common_time_when_stamp_is_none():
    buf = TransformBuffer()
    _robot(buf)
    buf.set_transform("odom", "base_link", 5.0, translation=(8, 0, 0), quaternion=Q_YAW90)
    np.testing.assert_allclose(buf.lookup("map", "base_link")[:3, 3], [18, 0, 0], atol=1e-12)
    np.testing.assert_allclose(buf.lookup("map", "base_link", 0)[:3, 3], [18, 0, 0], atol=1e-12)


def test_extrapolation_limits_and_tolerance():
    buf = TransformBuffer(tolerance_s=0.05)
    _robot(buf)
    with pytest.raises(ExtrapolationError, match="after the newest"):
        buf.lookup("map", "camera_optical", 3.2)
    with pytest.raises(ExtrapolationError, match="before the oldest"):
        buf.lookup("map", "camera_optical", 0.5)
    # within tolerance: the end sample
    np.testing.assert_allclose(buf.lookup("map", "base_link", 3.04)[:3, 3], [14, 0, 0], atol=1e-12)
    np.testing.assert_allclose(buf.lookup("map", "base_link", 3.2, tolerance_s=0.5)[:3, 3], [14, 0, 0])
    assert not buf.can_transform("map", "base_link", 3.2)
    assert buf.can_transform("map", "base_link", 2.5)


def test_cache_length_drops_old_samples():
    buf = TransformBuffer(cache_time_s=1.0)
    for i in range(31):
        buf.set_transform("odom", "base", i * 0.1, translation=(i, 0, 0), quaternion=(0, 0, 0, 1))
    lo, hi = buf.time_range("base")
    assert hi == pytest.approx(3.0) and lo == pytest.approx(2.0)
    with pytest.raises(ExtrapolationError):
        buf.lookup("odom", "base", 1.5)
    buf.set_transform("odom", "base", 0.5, translation=(99, 0, 0), quaternion=(0, 0, 0, 1))  # too old: ignored
    assert buf.time_range("base")[0] == pytest.approx(2.0)


def test_unknown_and_unconnected_frames():
    buf = TransformBuffer()
    _robot(buf)
    buf.set_transform("world", "other", 1.0, translation=(0, 0, 0), quaternion=(0, 0, 0, 1))
    with pytest.raises(LookupTransformError, match="does not exist"):
        buf.lookup("map", "nope", 2.0)
    with pytest.raises(LookupTransformError, match="not connected"):
        buf.lookup("map", "other", 1.0)
    assert issubclass(LookupTransformError, GnesfError) and issubclass(ExtrapolationError, GnesfError)


def test_invalid_input_is_rejected_and_buffer_unchanged():
    buf = TransformBuffer()
    buf.set_transform("map", "cam", 1.0, translation=(1, 2, 3), quaternion=(0, 0, 0, 1))
    for kw in ({"translation": (float("nan"), 0, 0), "quaternion": (0, 0, 0, 1)},
               {"translation": (0, 0, 0), "quaternion": (0, 0, 0.5, 0.5)}):
        with pytest.raises(InvalidTransformError):
            buf.set_transform("map", "cam", 2.0, **kw)
    with pytest.raises(InvalidTransformError):
        buf.set_transform("cam", "cam", 2.0, np.eye(4))
    assert buf.time_range("cam") == (1.0, 1.0)


def test_clear_keeps_static_transforms():
    buf = TransformBuffer()
    _robot(buf)
    buf.clear()
    assert buf.time_range("base_link") is None
    np.testing.assert_allclose(apply(buf.lookup("base_link", "camera_optical"), [0, 0, 0]), [0.2, 0, 1.0])
    with pytest.raises(LookupTransformError):
        buf.lookup("map", "base_link", 2.0)


def test_matrix_input_equals_quaternion_input():
    buf = TransformBuffer()
    T = make_transform((1, 2, 3), Q_OPTICAL)
    buf.set_transform("a", "b", 1.0, T)
    np.testing.assert_allclose(buf.lookup("a", "b", 1.0), T, atol=1e-12)


# ----------------------------------------------------------------------------- over DDS
_TF_PUBLISHER = """
import time, rclpy
from rclpy.qos import QoSProfile, DurabilityPolicy, ReliabilityPolicy
from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TFMessage

def ts(sec, parent, child, t, q):
    m = TransformStamped()
    m.header.stamp.sec = sec
    m.header.frame_id, m.child_frame_id = parent, child
    # float(): rclpy 9.1.2 serialises a Python int in a float64 field as garbage (1 -> 5e-324)
    t, q = [float(v) for v in t], [float(v) for v in q]
    m.transform.translation.x, m.transform.translation.y, m.transform.translation.z = t
    m.transform.rotation.x, m.transform.rotation.y, m.transform.rotation.z, m.transform.rotation.w = q
    return m

rclpy.init()
node = rclpy.create_node("tf_test_publisher")
static = node.create_publisher(TFMessage, "/tf_static", QoSProfile(depth=100,
    durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE))
dyn = node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
static.publish(TFMessage(transforms=[ts(0, "base_link", "camera_optical", (0.2, 0, 1.0), (-0.5, 0.5, -0.5, 0.5))]))
deadline = time.monotonic() + 20
while dyn.get_subscription_count() == 0 and time.monotonic() < deadline:
    time.sleep(0.02)
time.sleep(0.2)
dyn.publish(TFMessage(transforms=[ts(1, "odom", "base_link", (0, 0, 0), (0, 0, 0, 1)),
                                  ts(1, "odom", "bad", (0, 0, 0), (0, 0, 0, 0))]))
dyn.publish(TFMessage(transforms=[ts(3, "odom", "base_link", (4, 0, 0), (0, 0, 0.7071067811865476, 0.7071067811865476))]))
print("sent", flush=True)
time.sleep(2.0)
"""


def test_tf_listener_over_dds():
    import rclpy

    from ros_env import ros_domain, spawn_python, stop

    from gnesf_ros.ros.tf_listener import TfListener

    with ros_domain() as env:
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        try:
            node = rclpy.create_node("tf_test_listener", context=ctx)
            buf = TransformBuffer()
            listener = TfListener(node, buf)
            executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
            pub = spawn_python(_TF_PUBLISHER, env)  # starts after the listener: static must still arrive
            deadline = time.monotonic() + 20
            while not buf.can_transform("odom", "camera_optical", 3.0) and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            for _ in range(10):  # let the rejected transform's message be handled too
                executor.spin_once(timeout_sec=0.01)
            _, err = stop(pub)
        finally:
            rclpy.shutdown(context=ctx)
    assert buf.can_transform("odom", "camera_optical", 3.0), err[-2000:]
    np.testing.assert_allclose(apply(buf.lookup("odom", "camera_optical", 3.0), [0, 0, 1]), [4, 1.2, 1.0],
                               atol=1e-9)
    np.testing.assert_allclose(buf.lookup("odom", "base_link", 2.0)[:3, 3], [2, 0, 0], atol=1e-9)
    assert listener.counts["accepted_static"] == 1
    assert listener.counts["accepted"] == 2
    assert listener.counts["rejected"] == 1
