"""Meshing and raycast rendering against an analytic box scene (test/mapping_scene.py)."""
import numpy as np
import pytest

from gnesf_ros.classes import default_class_table
from gnesf_ros.config import MapConfig
from gnesf_ros.mapping import SemanticVoxelMap
from gnesf_ros.types import FragmentResult
from mapping_scene import (BOX_CLASS, BOX_MAX, BOX_MIN, FLOOR_CLASS, TOP_CLASS, box_face_pixels, box_fragment,
                           box_sdf, intrinsics, look_at, one_hot, orbit_frames, render_analytic)

VS = 0.04
C = 20
HELD_OUT = look_at([1.3, -0.9, 1.0], [0.0, 0.0, 0.2])


@pytest.fixture(scope="module")
def depth_map():
    m = SemanticVoxelMap(MapConfig(voxel_size_m=VS, fusion="bayesian"))
    for f in orbit_frames(12, (90, 120)):
        m.integrate_depth(f, one_hot(f.labels, C))
    return m


def test_rendered_depth_and_labels_of_box_match_analytic(depth_map):
    size = (120, 160)
    K = intrinsics(size)
    labels, depth = depth_map.render(HELD_OUT, K, size)
    gt_depth, gt_labels = render_analytic(HELD_OUT, K, size)
    # Projective TSDF (distance along the optical axis) bloats convex edges by 1-2 voxels.
    box = box_face_pixels(HELD_OUT, K, size, margin=2 * VS)
    assert box.sum() > 500
    assert (depth[box] > 0).mean() > 0.99
    err = np.abs(depth - gt_depth)[box & (depth > 0)]
    assert np.median(err) < 0.25 * VS and np.percentile(err, 99) < VS
    # Labels: exact class on the box faces and on the observed floor near it.
    assert (labels[box] == gt_labels[box]).mean() > 0.97
    floor = (gt_labels == FLOOR_CLASS) & (depth > 0) & (np.abs(depth - gt_depth) < VS)
    assert floor.sum() > 500 and (labels[floor] == FLOOR_CLASS).mean() > 0.97
    # Off-map rays (above the horizon) hit nothing.
    assert depth[0, 0] == 0.0 and labels[0, 0] == 255


def test_fragment_box_renders_within_one_voxel_and_mesh_is_closed():
    m = SemanticVoxelMap(MapConfig(voxel_size_m=VS))
    m.integrate(box_fragment())
    verts, faces, labels, conf = m.mesh_arrays()
    # Closed surface: every undirected edge is shared by exactly two triangles.
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    assert (counts == 2).all()
    # Outward normals: the signed volume of the closed mesh is the box volume (positive).
    v = verts[faces].astype(np.float64)
    volume = np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6
    assert volume == pytest.approx(np.prod(BOX_MAX - BOX_MIN), rel=0.05)
    # Vertices on the surface within a fraction of a voxel.
    assert np.abs(box_sdf(verts.astype(np.float64))).max() < 0.5 * VS
    size = (120, 160)
    K = intrinsics(size)
    depth = m.render_depth(HELD_OUT, K, size)
    gt_depth, gt_labels = render_analytic(HELD_OUT, K, size)
    box = box_face_pixels(HELD_OUT, K, size)
    assert (depth[box] > 0).all()
    assert np.abs(depth - gt_depth)[box].max() < VS


def test_mesh_labels_on_two_class_object():
    m = SemanticVoxelMap(MapConfig(voxel_size_m=VS))
    m.integrate(box_fragment(split_z=0.25))
    mesh = m.extract_mesh()
    table = default_class_table()
    z = mesh.vertices[:, 2]
    upper, lower = z > 0.25 + VS, z < 0.25 - VS
    assert upper.sum() > 100 and lower.sum() > 100
    assert (mesh.labels[upper] == table.nyu40_ids[TOP_CLASS]).all()
    assert (mesh.labels[lower] == table.nyu40_ids[BOX_CLASS]).all()
    np.testing.assert_array_equal(mesh.colors[upper], np.broadcast_to(table.colors[TOP_CLASS], (upper.sum(), 3)))
    assert mesh.confidence[upper | lower].min() == pytest.approx(1.0)
    # Vertex labels also come back through the semantic point cloud (class indices).
    xyz, lab, conf, col = m.point_cloud()
    assert len(xyz) == len(mesh.vertices) and (lab[upper] == TOP_CLASS).all()


def test_incremental_mesh_equals_full_rebuild(depth_map):
    m = SemanticVoxelMap(MapConfig(voxel_size_m=VS))
    frames = orbit_frames(8, (60, 80))
    for f in frames[:4]:
        m.integrate_depth(f, one_hot(f.labels, C))
    m.mesh_arrays()  # mesh now cached for the first half
    for f in frames[4:]:
        m.integrate_depth(f, one_hot(f.labels, C))
    inc = m.mesh_arrays()
    full = SemanticVoxelMap(MapConfig(voxel_size_m=VS))
    for f in frames:
        full.integrate_depth(f, one_hot(f.labels, C))
    ref = full.mesh_arrays()

    def canon(verts, faces, labels):
        tri = np.sort(np.round(verts[faces], 5).reshape(len(faces), -1).view("f4,f4,f4,f4,f4,f4,f4,f4,f4")
                      .ravel())
        order = np.lexsort(np.round(verts, 5).T)
        return tri, np.round(verts[order], 5), labels[order]

    a, b = canon(*inc[:3]), canon(*ref[:3])
    assert len(a[0]) == len(b[0]) > 1000
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_empty_map_renders_nothing():
    m = SemanticVoxelMap()
    labels, depth = m.render(np.eye(4), intrinsics((30, 40)), (30, 40))
    assert (labels == 255).all() and (depth == 0).all()
    assert len(m.extract_mesh().vertices) == 0


def test_mesh_after_eviction_matches_a_rebuild(tmp_path):
    """Blocks evicted after meshing leave the cached mesh (their neighbours are re-meshed)."""
    frag = box_fragment()
    left = frag.coords[:, 0] < 0

    def part(mask):
        return FragmentResult(frag.coords[mask], frag.sdf[mask], frag.class_probs[mask], frag.weight[mask], VS)

    probe = SemanticVoxelMap(MapConfig(voxel_size_m=VS))
    probe.integrate(part(left))
    cap = probe.num_blocks
    m = SemanticVoxelMap(MapConfig(voxel_size_m=VS, max_blocks=cap, eviction="farthest"))
    m.integrate(part(left), camera_position=[-2.0, 0.0, 0.2])
    cached = m.mesh_arrays()[0]
    assert m.counters["blocks_evicted"] == 0 and cached[:, 0].min() < -0.29
    m.integrate(part(~left), camera_position=[2.0, 0.0, 0.2])  # evicts blocks far from x = 2
    assert m.counters["blocks_evicted"] > 0 and m.num_blocks == cap
    verts, faces, labels, _ = m.mesh_arrays()
    rebuilt = SemanticVoxelMap.load(m.save(tmp_path / "m.npz"))  # meshes every block from scratch
    rv, rf, rl, _ = rebuilt.mesh_arrays()
    assert len(faces) == len(rf) > 0
    np.testing.assert_array_equal(np.sort(verts, axis=0), np.sort(rv, axis=0))
    assert verts[:, 0].min() > -0.29  # the face at x = -0.3 went with its blocks
