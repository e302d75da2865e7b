"""Map files (lossless round trip, resume, version/class-table checks) and 2D grids."""
import json

import numpy as np
import pytest

from gnesf_ros.classes import ClassTable, default_class_table
from gnesf_ros.config import MapConfig
from gnesf_ros.data.ply import read_labeled_ply
from gnesf_ros.errors import DataError, GnesfError
from gnesf_ros.mapping import SemanticVoxelMap
from gnesf_ros.mapping.io import save_mesh_ply
from mapping_scene import BOX_MAX, BOX_MIN, BOX_CLASS, FLOOR_CLASS, TOP_CLASS, one_hot, orbit_frames

C = 20


def integrated(frames, fusion="average"):
    m = SemanticVoxelMap(MapConfig(fusion=fusion))
    for f in frames:
        m.integrate_depth(f, one_hot(f.labels, C))
    return m


def assert_same_map(a, b):
    ka, kb = a.store.active_keys(), b.store.active_keys()
    np.testing.assert_array_equal(ka, kb)
    sa, sb = a.store.find(ka), b.store.find(kb)
    for name in ("sdf", "weight", "classes", "sem_weight", "stamp"):
        np.testing.assert_array_equal(getattr(a.store, name)[sa], getattr(b.store, name)[sb])
    assert a.counters == b.counters and a.tick == b.tick


@pytest.mark.parametrize("fusion", ["average", "bayesian"])
def test_save_load_round_trip_is_exact_and_integration_resumes(tmp_path, fusion):
    frames = orbit_frames(6, (48, 64))
    m = integrated(frames[:3], fusion)
    path = m.save(tmp_path / "map.npz")
    loaded = SemanticVoxelMap.load(path)
    assert loaded.cfg == m.cfg
    assert_same_map(m, loaded)
    np.testing.assert_array_equal(m.mesh_arrays()[1].shape, loaded.mesh_arrays()[1].shape)
    for f in frames[3:]:  # continue both: identical results
        m.integrate_depth(f, one_hot(f.labels, C))
        loaded.integrate_depth(f, one_hot(f.labels, C))
    assert_same_map(m, loaded)
    va, fa, la, _ = m.mesh_arrays()
    vb, fb, lb, _ = loaded.mesh_arrays()
    np.testing.assert_array_equal(va, vb)
    np.testing.assert_array_equal(la, lb)


def test_load_rejects_other_version_class_table_and_garbage(tmp_path):
    m = integrated(orbit_frames(2, (24, 32)))
    path = m.save(tmp_path / "map.npz")
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(str(data["meta"]))
    meta["version"] = 99
    with open(tmp_path / "v99.npz", "wb") as f:
        np.savez(f, **{**data, "meta": np.array(json.dumps(meta))})
    with pytest.raises(GnesfError, match="version 99"):
        SemanticVoxelMap.load(tmp_path / "v99.npz")
    t = default_class_table()
    other = ClassTable(names=("thing",) + t.names[1:], nyu40_ids=t.nyu40_ids, colors=t.colors)
    with pytest.raises(GnesfError, match="class table"):
        SemanticVoxelMap.load(path, class_table=other)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        SemanticVoxelMap.load(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="not found"):
        SemanticVoxelMap.load(tmp_path / "missing.npz")


def test_mesh_ply_has_nyu40_labels(tmp_path):
    m = integrated(orbit_frames(6, (48, 64)))
    path = save_mesh_ply(m, tmp_path / "mesh.ply")
    mesh = read_labeled_ply(path)
    verts, faces, labels, _ = m.mesh_arrays()
    assert len(mesh.vertices) == len(verts) > 0 and len(mesh.faces) == len(faces)
    table = default_class_table()
    assert set(np.unique(mesh.labels)) <= {table.nyu40_ids[c] for c in (BOX_CLASS, TOP_CLASS, FLOOR_CLASS)} | {0}


def test_occupancy_and_class_grids_of_box():
    m = integrated(orbit_frames(12, (60, 80)))
    occ = m.occupancy_grid()
    res, (ox, oy) = occ.resolution_m, occ.origin_xy
    assert res == m.voxel_size

    def cell(grid, x, y):
        return grid.data[int(np.floor((y - oy) / res)), int(np.floor((x - ox) / res))]

    # Default band 0.1 .. 1.5 m: the box (0 .. 0.5 m high) occupies its footprint, the floor is free.
    assert cell(occ, 0.0, 0.0) == 100 and cell(occ, 0.25, 0.2) == 100
    assert cell(occ, 0.6, 0.0) == 0 and cell(occ, 0.0, -0.6) == 0
    footprint = np.prod((BOX_MAX - BOX_MIN)[:2])
    assert (occ.data == 100).sum() * res ** 2 == pytest.approx(footprint, rel=0.35)
    cls = m.class_grid()
    assert cell(cls, 0.0, 0.0) == TOP_CLASS and cell(cls, 0.7, 0.0) == FLOOR_CLASS
    assert cls.data.shape == occ.data.shape
