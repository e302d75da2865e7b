"""Message conversions against hand-made messages and arrays (cv_bridge / sensor_msgs_py semantics)."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest

import rclpy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from gnesf_ros.errors import GnesfError
from gnesf_ros.ros import conversions as conv
from gnesf_ros.ros.conversions import ConversionError

RNG = np.random.default_rng(0)
HEADER = Header(frame_id="camera_color_optical_frame")
HEADER.stamp.sec, HEADER.stamp.nanosec = 5, 250_000_000


def wire(msg):
    """Through real CDR (what a subscriber gets)."""
    return deserialize_message(serialize_message(msg), type(msg))


def image(h, w, enc, step, data: bytes, big=False) -> Image:
    m = Image(height=h, width=w, encoding=enc, step=step, is_bigendian=int(big))
    m.data = bytes(data)
    return m


@pytest.mark.parametrize("enc,dtype,shape", [
    ("rgb8", np.uint8, (6, 5, 3)), ("bgr8", np.uint8, (6, 5, 3)), ("rgba8", np.uint8, (6, 5, 4)),
    ("bgra8", np.uint8, (6, 5, 4)), ("mono8", np.uint8, (6, 5)), ("mono16", np.uint16, (6, 5)),
    ("16UC1", np.uint16, (6, 5)), ("32FC1", np.float32, (6, 5)), ("32FC20", np.float32, (3, 4, 20)),
])
def test_image_round_trip(enc, dtype, shape):
    if np.dtype(dtype).kind == "f":
        a = RNG.standard_normal(shape).astype(dtype)
    else:
        a = RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    msg = wire(conv.numpy_to_image(a, enc, HEADER))
    assert (msg.height, msg.width, msg.encoding) == (shape[0], shape[1], enc)
    assert msg.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    assert msg.header == HEADER
    out = conv.image_to_numpy(msg)
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_array_equal(out, a)


def test_padded_step_mono16_hand_made():
    # 2 rows x 3 px of little-endian uint16, each row padded with 2 junk bytes (step 8)
    row0 = struct.pack("<3H", 1, 256, 65535) + b"\xaa\xbb"
    row1 = struct.pack("<3H", 7, 1000, 2) + b"\xcc\xdd"
    out = conv.image_to_numpy(image(2, 3, "mono16", 8, row0 + row1))
    np.testing.assert_array_equal(out, [[1, 256, 65535], [7, 1000, 2]])


def test_padded_step_rgb8_hand_made():
    data = bytes([1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0])  # 2x2 rgb8, step 8
    out = conv.image_to_numpy(image(2, 2, "rgb8", 8, data))
    np.testing.assert_array_equal(out, [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]])
    np.testing.assert_array_equal(conv.image_to_rgb(image(2, 2, "bgr8", 8, data))[0, 0], [3, 2, 1])


def test_big_endian_16uc1_hand_made():
    data = bytes([0x01, 0x02, 0x00, 0xFF, 0x12, 0x34, 0xFF, 0x00])  # 2x2, big-endian
    msg = image(2, 2, "16UC1", 4, data, big=True)
    np.testing.assert_array_equal(conv.image_to_numpy(msg), [[0x0102, 0x00FF], [0x1234, 0xFF00]])
    np.testing.assert_allclose(conv.image_to_depth_m(msg), [[0.258, 0.255], [4.660, 65.28]], rtol=1e-6)
    # a big-endian array gives a big-endian message that decodes to the same values
    a = np.array([[1, 2], [300, 40000]], ">u2")
    m = wire(conv.numpy_to_image(a, "16UC1"))
    assert m.is_bigendian == 1 and bytes(m.data[:2]) == b"\x00\x01"
    np.testing.assert_array_equal(conv.image_to_numpy(m), a)


def test_colour_conversions_to_rgb():
    px = [10, 20, 30, 40]
    for enc, data, expect in [("rgb8", px[:3], [10, 20, 30]), ("bgr8", px[:3], [30, 20, 10]),
                              ("rgba8", px, [10, 20, 30]), ("bgra8", px, [30, 20, 10]),
                              ("mono8", px[:1], [10, 10, 10])]:
        out = conv.image_to_rgb(image(1, 1, enc, len(data), bytes(data)))
        assert out.dtype == np.uint8 and out.shape == (1, 1, 3)
        np.testing.assert_array_equal(out[0, 0], expect, err_msg=enc)


def test_depth_to_metres():
    mm = np.array([[0, 1500], [65535, 1]], np.uint16)
    np.testing.assert_allclose(conv.image_to_depth_m(conv.numpy_to_image(mm, "16UC1")),
                               [[0, 1.5], [65.535, 0.001]], rtol=1e-6)
    m = np.array([[np.nan, 2.25], [-1.0, np.inf]], np.float32)
    np.testing.assert_array_equal(conv.image_to_depth_m(conv.numpy_to_image(m, "32FC1")), [[0, 2.25], [0, 0]])


def test_image_errors():
    assert issubclass(ConversionError, GnesfError)
    with pytest.raises(ConversionError, match="unsupported image encoding 'yuv422'"):
        conv.image_to_numpy(image(1, 2, "yuv422", 4, b"\0" * 4))
    with pytest.raises(ConversionError, match="expected height x step"):
        conv.image_to_numpy(image(2, 2, "rgb8", 6, b"\0" * 11))
    with pytest.raises(ConversionError, match="step 5 is smaller"):
        conv.image_to_numpy(image(1, 2, "rgb8", 5, b"\0" * 5))
    with pytest.raises(ConversionError, match="empty"):
        conv.image_to_numpy(image(0, 0, "rgb8", 0, b""))
    with pytest.raises(ConversionError, match="not supported"):
        conv.image_to_rgb(image(1, 1, "mono16", 2, b"\0\0"))
    with pytest.raises(ConversionError, match="not supported"):
        conv.image_to_depth_m(image(1, 1, "rgb8", 3, b"\0\0\0"))
    with pytest.raises(ConversionError, match="dtype float64"):
        conv.numpy_to_image(np.zeros((2, 2)), "32FC1")
    with pytest.raises(ConversionError, match="does not fit"):
        conv.numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgba8")


def test_own_image_decoder_matches_cv_bridge():
    cv_bridge = pytest.importorskip("cv_bridge")
    bridge = cv_bridge.CvBridge()
    for msg in [image(2, 3, "mono16", 8, bytes(range(16))), image(2, 2, "16UC1", 4, bytes(range(8)), big=True),
                image(2, 2, "bgr8", 8, bytes(range(16)))]:
        np.testing.assert_array_equal(conv._decode_image(msg), bridge.imgmsg_to_cv2(msg, "passthrough"))


# ----------------------------------------------------------------------------- clouds
def test_pack_rgb_known_bits():
    packed = conv.pack_rgb(np.array([[255, 0, 0], [1, 2, 3]], np.uint8))
    assert packed.view(np.uint32).tolist() == [0x00FF0000, 0x00010203]
    np.testing.assert_array_equal(conv.unpack_rgb(packed), [[255, 0, 0], [1, 2, 3]])


def test_semantic_cloud_layout_and_round_trip():
    xyz = np.array([[0.5, -1.0, 2.0], [3.25, 0.0, -0.125], [1e3, 2e-3, 7.0]], np.float32)
    colors = np.array([[255, 128, 0], [0, 0, 0], [9, 99, 199]], np.uint8)
    labels = np.array([0, 19, 255])
    conf = np.array([0.5, 1.0, 0.0], np.float32)
    msg = wire(conv.semantic_cloud(HEADER, xyz, colors, labels, conf))
    layout = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    assert layout == [("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1),
                      ("z", 8, PointField.FLOAT32, 1), ("rgb", 12, PointField.FLOAT32, 1),
                      ("label", 16, PointField.UINT16, 1), ("confidence", 20, PointField.FLOAT32, 1)]
    assert (msg.point_step, msg.row_step, msg.height, msg.width) == (24, 72, 1, 3)
    assert bytes(msg.data[:4]) == struct.pack("<f", 0.5)  # x of point 0, little-endian
    pts = conv.read_points(msg)
    np.testing.assert_array_equal(np.stack([pts["x"], pts["y"], pts["z"]], 1), xyz)
    np.testing.assert_array_equal(conv.unpack_rgb(pts["rgb"]), colors)
    np.testing.assert_array_equal(pts["label"], labels)
    np.testing.assert_array_equal(pts["confidence"], conf)
    sub = conv.read_points(msg, ["label", "x"])
    assert sub.dtype.names == ("label", "x")
    small = conv.read_points(wire(conv.semantic_cloud(HEADER, xyz[:1], labels=[7], label_dtype=np.uint8)))
    assert small.dtype.names == ("x", "y", "z", "label") and small["label"].dtype == np.uint8


def test_read_points_big_endian_with_row_padding_hand_made():
    # 2 rows x 1 point, fields x (float32 @0) and i (uint16 @4), point_step 8, row_step 12
    rows = [struct.pack(">fH", 1.5, 513) + b"\0\0" + b"\xee" * 4, struct.pack(">fH", float("nan"), 2) + b"\0" * 6]
    msg = PointCloud2(height=2, width=1, is_bigendian=True, point_step=8, row_step=12, is_dense=False,
                      fields=[PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
                              PointField(name="i", offset=4, datatype=PointField.UINT16, count=1)])
    msg.data = b"".join(rows)
    pts = conv._read_points_own(msg, None, False)
    assert pts["x"][0] == 1.5 and np.isnan(pts["x"][1]) and pts["i"].tolist() == [513, 2]
    assert conv._read_points_own(msg, None, True)["i"].tolist() == [513]
    with pytest.raises(ConversionError, match="expected height x row_step"):
        msg.data = b"".join(rows)[:-1]
        conv.read_points(msg)


def test_cloud_errors():
    with pytest.raises(ConversionError, match="3 values for 2 points"):
        conv.semantic_cloud(HEADER, np.zeros((2, 3)), labels=[1, 2, 3])
    with pytest.raises(ConversionError, match="out of range"):
        conv.semantic_cloud(HEADER, np.zeros((1, 3)), labels=[300], label_dtype=np.uint8)


def test_own_cloud_reader_matches_sensor_msgs_py():
    pc2 = pytest.importorskip("sensor_msgs_py.point_cloud2")
    msg = conv.semantic_cloud(HEADER, RNG.standard_normal((10, 3)), labels=np.arange(10))
    ref = pc2.read_points(msg, skip_nans=False)
    own = conv._read_points_own(msg, None, False)
    for n in own.dtype.names:
        np.testing.assert_array_equal(own[n], ref[n])


# ----------------------------------------------------------------------------- markers
def _quad_mesh():
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 4]], np.int32)
    c = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]], np.uint8)
    return v, f, c


def test_triangle_list_split_and_per_vertex_colours():
    v, f, c = _quad_mesh()
    markers = conv.triangle_list_markers(v, f, c, HEADER, max_vertices=7, ns="m")  # 2 triangles each
    assert [m.id for m in markers] == [0, 1]
    assert all(m.type == Marker.TRIANGLE_LIST and m.ns == "m" and m.action == Marker.ADD for m in markers)
    assert [len(m.points) for m in markers] == [6, 6]
    m1 = wire(markers[1])
    # marker 1 holds faces 2 and 3: vertices 0,1,4 then 1,2,4
    got = [(p.x, p.y, p.z) for p in m1.points]
    assert got == [(0, 0, 0), (1, 0, 0), (0, 0, 1), (1, 0, 0), (1, 1, 0), (0, 0, 1)]
    assert [(q.r, q.g, q.b, q.a) for q in m1.colors[:3]] == [(1, 0, 0, 1), (0, 1, 0, 1), (0, 0, 0, 1)]
    assert m1.pose.orientation.w == 1.0 and m1.scale.x == 1.0 and m1.header == HEADER
    assert len(conv.triangle_list_markers(v, f, c, HEADER, max_vertices=12)) == 1
    assert len(conv.triangle_list_markers(v, f, c, HEADER, max_vertices=3)) == 4


def test_empty_mesh_and_delete_markers():
    empty = conv.triangle_list_markers(np.zeros((0, 3)), np.zeros((0, 3), int), None, HEADER)
    assert len(empty) == 1 and len(empty[0].points) == 0
    dels = conv.delete_markers(HEADER, "m", 2, 5)
    assert [(d.id, d.action, d.ns) for d in dels] == [(2, Marker.DELETE, "m"), (3, Marker.DELETE, "m"),
                                                       (4, Marker.DELETE, "m")]
    with pytest.raises(ConversionError, match="out of range"):
        conv.triangle_list_markers(np.zeros((2, 3)), [[0, 1, 2]], None, HEADER)


# ----------------------------------------------------------------------------- grids, labels, poses
def test_occupancy_grid():
    data = np.array([[0, 100, -1], [50, 0, 0]], np.int8)
    msg = wire(conv.numpy_to_occupancy_grid(data, 0.05, (-1.5, 2.0), HEADER))
    assert (msg.info.width, msg.info.height) == (3, 2)
    assert msg.info.resolution == pytest.approx(0.05)
    assert (msg.info.origin.position.x, msg.info.origin.position.y) == (-1.5, 2.0)
    assert list(msg.data) == [0, 100, -1, 50, 0, 0]  # row-major, row 0 = lowest y
    np.testing.assert_array_equal(conv.occupancy_grid_to_numpy(msg), data)
    classes = np.array([[3, 255], [19, 0]], np.uint8)
    assert list(conv.numpy_to_occupancy_grid(classes, 0.1, (0, 0), HEADER).data) == [3, -1, 19, 0]
    with pytest.raises(ConversionError):
        conv.numpy_to_occupancy_grid(np.array([[200]], np.uint8), 0.1, (0, 0), HEADER)
    with pytest.raises(ConversionError):
        conv.numpy_to_occupancy_grid(np.zeros((2, 2), np.float32), 0.1, (0, 0), HEADER)


def test_label_info():
    msg = wire(conv.label_info(["wall", "floor"], HEADER, threshold=0.5))
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [(0, "wall"), (1, "floor")]
    assert msg.threshold == 0.5


def test_pose_helpers():
    s = math.sqrt(0.5)
    pose = conv.matrix_to_pose(np.array([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1.0]]))
    assert (pose.position.x, pose.position.y, pose.position.z) == (1, 2, 3)
    np.testing.assert_allclose([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w],
                               [0, 0, s, s], atol=1e-12)
    T = conv.pose_to_matrix(wire(pose))
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(conv.transform_to_matrix(conv.matrix_to_transform(T)), T, atol=1e-12)
    ts = conv.transform_stamped(T, "map", "cam", 12.000000003)
    assert (ts.header.stamp.sec, ts.header.stamp.nanosec, ts.header.frame_id, ts.child_frame_id) == (12, 3, "map", "cam")
    pose.orientation.w = float("nan")
    with pytest.raises(ConversionError, match="finite"):
        conv.pose_to_matrix(pose)
    pose.orientation.w = 2.0
    with pytest.raises(ConversionError, match="not unit length"):
        conv.pose_to_matrix(pose)
    with pytest.raises(ConversionError):
        conv.matrix_to_pose(np.diag([1.0, 1.0, -1.0, 1.0]))
    assert conv.stamp_to_sec(conv.sec_to_stamp(1.5)) == 1.5


def test_marker_array_cdr_equals_rclpy_serialisation():
    from visualization_msgs.msg import MarkerArray

    rng = np.random.default_rng(3)
    v = rng.random((50, 3)).astype(np.float32)
    f = rng.integers(0, 50, (40, 3))
    c = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    for header, colors, alpha in [(HEADER, c, 0.5), (Header(frame_id="m"), None, 1.0)]:
        ref = MarkerArray(markers=conv.triangle_list_markers(v, f, colors, header, 30, ns="mesh", alpha=alpha)
                          + conv.delete_markers(header, "mesh", 4, 7))
        cdr, n_add = conv.triangle_list_marker_array_cdr(v, f, colors, header, 30, ns="mesh", alpha=alpha,
                                                         delete_ids=range(4, 7))
        assert n_add == 4
        assert deserialize_message(cdr, MarkerArray) == wire(ref)
    empty, n_add = conv.triangle_list_marker_array_cdr(np.zeros((0, 3)), np.zeros((0, 3), int), None, HEADER)
    assert n_add == 0 and deserialize_message(empty, MarkerArray) == wire(
        MarkerArray(markers=conv.triangle_list_markers(np.zeros((0, 3)), np.zeros((0, 3), int), None, HEADER)))
    # RViz2 reports an ADD TRIANGLE_LIST without points as an error: an empty map is one DELETEALL
    markers = deserialize_message(empty, MarkerArray).markers
    assert [(m.action, len(m.points)) for m in markers] == [(Marker.DELETEALL, 0)]


def test_marker_array_cdr_publishes_over_dds():
    import time

    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from visualization_msgs.msg import MarkerArray

    from ros_env import ros_domain

    v, f, c = _quad_mesh()
    cdr, _ = conv.triangle_list_marker_array_cdr(v, f, c, HEADER, max_vertices=6)
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    got = []
    with ros_domain():
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        try:
            node = rclpy.create_node("marker_cdr_test", context=ctx)
            node.create_publisher(MarkerArray, "mesh", qos).publish(cdr)
            node.create_subscription(MarkerArray, "mesh", got.append, qos)
            executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
        finally:
            rclpy.shutdown(context=ctx)
    assert len(got) == 1 and [len(m.points) for m in got[0].markers] == [6, 6]
    assert got[0] == deserialize_message(cdr, MarkerArray)
