"""Labeled PLY I/O: round trips, foreign writers (Open3D, hand-written ascii / big-endian), bad files."""
import numpy as np
import open3d as o3d
import pytest

from gnesf_ros.data.ply import LabeledMesh, read_labeled_ply, write_labeled_ply
from gnesf_ros.errors import DataError


def _mesh(confidence=True) -> LabeledMesh:
    rng = np.random.default_rng(3)
    return LabeledMesh(
        vertices=rng.normal(size=(6, 3)).astype(np.float32),
        faces=np.array([[0, 1, 2], [2, 3, 4], [4, 5, 0]]),
        colors=rng.integers(0, 256, (6, 3)),
        labels=np.array([1, 2, 5, 40, 0, 39]),
        confidence=rng.random(6).astype(np.float32) if confidence else None,
    )


def test_binary_round_trip_is_exact(tmp_path):
    m = _mesh()
    path = write_labeled_ply(tmp_path / "m.ply", m)
    r = read_labeled_ply(path)
    np.testing.assert_array_equal(r.vertices, m.vertices)
    np.testing.assert_array_equal(r.faces, m.faces)
    np.testing.assert_array_equal(r.colors, m.colors)
    np.testing.assert_array_equal(r.labels, m.labels)
    np.testing.assert_array_equal(r.confidence, m.confidence)
    assert r.labels.dtype == np.int32 and r.faces.dtype == np.int32


def test_header_uses_scannet_property_names(tmp_path):
    path = write_labeled_ply(tmp_path / "m.ply", _mesh(confidence=False))
    header = path.read_bytes().split(b"end_header")[0].decode()
    props = [ln.split()[-1] for ln in header.splitlines() if ln.startswith("property")]
    assert props == ["x", "y", "z", "red", "green", "blue", "alpha", "label", "vertex_indices"]
    assert "format binary_little_endian 1.0" in header
    assert "property ushort label" in header and "property list uchar int vertex_indices" in header
    assert read_labeled_ply(path).confidence is None


def test_open3d_reads_what_we_write(tmp_path):
    m = _mesh()
    path = write_labeled_ply(tmp_path / "m.ply", m)
    o = o3d.io.read_triangle_mesh(str(path))
    np.testing.assert_allclose(np.asarray(o.vertices), m.vertices, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(o.triangles), m.faces)
    np.testing.assert_array_equal(np.round(np.asarray(o.vertex_colors) * 255), m.colors)


@pytest.mark.parametrize("ascii_", [True, False])
def test_reads_open3d_output_without_labels(tmp_path, ascii_):
    m = _mesh()
    o = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(m.vertices.astype(np.float64)),
                                  o3d.utility.Vector3iVector(m.faces))
    o.vertex_colors = o3d.utility.Vector3dVector(m.colors / 255.0)
    path = tmp_path / "o3d.ply"
    assert o3d.io.write_triangle_mesh(str(path), o, write_ascii=ascii_)
    r = read_labeled_ply(path)
    np.testing.assert_allclose(r.vertices, m.vertices, atol=1e-5)  # ascii keeps ~6 digits
    np.testing.assert_array_equal(r.faces, m.faces)
    np.testing.assert_array_equal(r.colors, m.colors)
    np.testing.assert_array_equal(r.labels, np.zeros(6))


def test_ascii_any_property_order_quads_and_extra_elements(tmp_path):
    text = """ply
format ascii 1.0
comment hand written: label first, doubles, no colours, a quad, an edge element
element vertex 4
property ushort label
property double z
property double x
property float y
element face 2
property uchar flags
property list uchar uint vertex_index
element edge 1
property int vertex1
property int vertex2
end_header
5 0.5 1.0 2.0
7 0.25 -1.0 2.0
0 0 0 0
40 1e-3 3 4
1 4 0 1 2 3
0 3 3 2 1
0 1
"""
    p = tmp_path / "a.ply"
    p.write_text(text)
    r = read_labeled_ply(p)
    np.testing.assert_allclose(r.vertices, [[1, 2, 0.5], [-1, 2, 0.25], [0, 0, 0], [3, 4, 1e-3]], atol=1e-7)
    np.testing.assert_array_equal(r.labels, [5, 7, 0, 40])
    np.testing.assert_array_equal(r.faces, [[0, 1, 2], [0, 2, 3], [3, 2, 1]])  # quad fan-triangulated
    np.testing.assert_array_equal(r.colors, np.full((4, 3), 128))  # no colours -> grey


def test_big_endian_and_mixed_polygons_binary(tmp_path):
    header = ("ply\nformat binary_big_endian 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
              "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
              "property int label\nelement face 2\nproperty list uchar int vertex_indices\nend_header\n")
    v = np.zeros(4, [("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("r", "u1"), ("g", "u1"), ("b", "u1"), ("l", ">i4")])
    v["x"], v["y"], v["z"] = [0, 1, 1, 0], [0, 0, 1, 1], [2, 2, 2, 2]
    v["r"], v["l"] = [10, 20, 30, 40], [1, 2, 3, 4]
    faces = (np.array([3], "u1").tobytes() + np.array([0, 1, 2], ">i4").tobytes()
             + np.array([4], "u1").tobytes() + np.array([0, 1, 2, 3], ">i4").tobytes())
    p = tmp_path / "be.ply"
    p.write_bytes(header.encode() + v.tobytes() + faces)
    r = read_labeled_ply(p)
    np.testing.assert_array_equal(r.vertices[:, 0], [0, 1, 1, 0])
    np.testing.assert_array_equal(r.colors[:, 0], [10, 20, 30, 40])
    np.testing.assert_array_equal(r.labels, [1, 2, 3, 4])
    np.testing.assert_array_equal(r.faces, [[0, 1, 2], [0, 1, 2], [0, 2, 3]])


def test_point_cloud_without_faces(tmp_path):
    m = LabeledMesh(np.eye(3), labels=[1, 2, 3])
    r = read_labeled_ply(write_labeled_ply(tmp_path / "pc.ply", m))
    assert r.num_faces == 0 and r.faces.shape == (0, 3)
    np.testing.assert_array_equal(r.labels, [1, 2, 3])


@pytest.mark.parametrize("cut", [20, 300, -5])
def test_truncated_file_is_a_data_error_naming_the_file(tmp_path, cut):
    data = write_labeled_ply(tmp_path / "ok.ply", _mesh()).read_bytes()
    bad = tmp_path / "broken_mesh.ply"
    bad.write_bytes(data[:cut])
    with pytest.raises(DataError, match="broken_mesh.ply"):
        read_labeled_ply(bad)


def test_missing_garbage_and_bad_index(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_labeled_ply(tmp_path / "nope.ply")
    (tmp_path / "g.ply").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match="g.ply"):
        read_labeled_ply(tmp_path / "g.ply")
    text = "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n" \
           "element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n3 0 1 2\n"
    (tmp_path / "idx.ply").write_text(text)
    with pytest.raises(DataError, match="out of range"):
        read_labeled_ply(tmp_path / "idx.ply")


def test_mesh_validates_shapes():
    with pytest.raises(ValueError, match="labels"):
        LabeledMesh(np.zeros((3, 3)), labels=[1, 2])
    with pytest.raises(ValueError, match="out of range"):
        LabeledMesh(np.zeros((3, 3)), faces=[[0, 1, 3]])
