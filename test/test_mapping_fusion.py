"""Fusion rules of SemanticVoxelMap against hand-computed values."""
import numpy as np
import pytest

from gnesf_ros.config import ConfigError, MapConfig
from gnesf_ros.errors import GnesfError
from gnesf_ros.mapping import SemanticVoxelMap
from gnesf_ros.types import Frame, FragmentResult

C = 20
VS = 0.04


def result(coords, sdf, probs, weight, sem_weight=None):
    return FragmentResult(coords=np.array(coords, np.int32).reshape(-1, 3), sdf=np.array(sdf, np.float32),
                          class_probs=np.array(probs, np.float32).reshape(-1, C),
                          weight=np.array(weight, np.float32), voxel_size=VS,
                          sem_weight=None if sem_weight is None else np.array(sem_weight, np.float32))


def onehot(i, p=1.0):
    v = np.full(C, (1 - p) / (C - 1), np.float32)
    v[i] = p
    return v


def voxel(vmap, coord):
    """(sdf, weight, class vector, sem weight) of one voxel, read straight from the store."""
    flat = vmap._voxel_flat_index(np.array([coord]), allocate=False)[0]
    s, l = divmod(int(flat), vmap.store.V)
    st = vmap.store
    return float(st.sdf[s, l]), float(st.weight[s, l]), st.classes[s, l].copy(), float(st.sem_weight[s, l])


def test_two_overlapping_fragments_weighted_average():
    m = SemanticVoxelMap(MapConfig(max_weight=100.0))
    # Fragment A: voxels (0,0,0) and (1,0,0); fragment B overlaps at (1,0,0) and adds (-1,0,0)
    # (negative coords cross a block border).
    a = result([[0, 0, 0], [1, 0, 0]], [0.02, -0.04], [onehot(3), onehot(5)], [1.0, 2.0])
    b = result([[1, 0, 0], [-1, 0, 0]], [0.08, 0.01], [onehot(7), onehot(2)], [3.0, 1.0],
               sem_weight=[1.0, 1.0])
    assert m.integrate(a) == 2 and m.integrate(b) == 2
    assert m.num_blocks == 2
    sdf, w, p, sw = voxel(m, [1, 0, 0])
    # SDF: (2 * -0.04 + 3 * 0.08) / 5 = 0.032 ; 0.08 is clipped to trunc = 3 * 0.04 = 0.12 (no effect)
    assert sdf == pytest.approx(0.032, abs=1e-6) and w == pytest.approx(5.0)
    # classes: sem weights 2 (defaults to weight) and 1 -> (2 * e5 + 1 * e7) / 3
    assert p[5] == pytest.approx(2 / 3, abs=1e-6) and p[7] == pytest.approx(1 / 3, abs=1e-6)
    assert p.sum() == pytest.approx(1.0, abs=1e-5) and sw == pytest.approx(3.0)
    sdf0, w0, p0, _ = voxel(m, [0, 0, 0])
    assert sdf0 == pytest.approx(0.02) and w0 == 1.0 and p0[3] == pytest.approx(1.0)
    assert voxel(m, [-1, 0, 0])[2][2] == pytest.approx(1.0)


def test_duplicates_saturation_clipping_and_masked_semantics():
    m = SemanticVoxelMap(MapConfig(max_weight=4.0))
    # Two rows for the same voxel in one result are fused like two observations.
    m.integrate(result([[2, 2, 2], [2, 2, 2]], [0.04, 0.00], [onehot(1), onehot(1)], [1.0, 1.0]))
    sdf, w, p, sw = voxel(m, [2, 2, 2])
    assert sdf == pytest.approx(0.02) and w == 2.0 and sw == 2.0
    # sem_weight 0 (visibility-masked): SDF fuses, semantics unchanged. SDF 1.0 m clips to 0.12.
    m.integrate(result([[2, 2, 2]], [1.0], [onehot(9)], [3.0], sem_weight=[0.0]))
    sdf, w, p, sw = voxel(m, [2, 2, 2])
    assert sdf == pytest.approx((2 * 0.02 + 3 * 0.12) / 5, abs=1e-6)
    assert w == 4.0  # saturated at max_weight
    assert p[1] == pytest.approx(1.0) and p[9] == 0.0 and sw == 2.0
    # weight 0 with sem_weight > 0: semantics only.
    m.integrate(result([[2, 2, 2]], [-0.1], [onehot(9)], [0.0], sem_weight=[2.0]))
    sdf2, w2, p, sw = voxel(m, [2, 2, 2])
    assert sdf2 == pytest.approx(sdf) and w2 == 4.0
    assert p[1] == pytest.approx(0.5) and p[9] == pytest.approx(0.5) and sw == 4.0


def test_kimera_rule_on_fragments_hand_computed():
    pm = 0.8
    m = SemanticVoxelMap(MapConfig(fusion="bayesian", bayes_measurement_prob=pm))
    for label in (4, 4, 11):
        m.integrate(result([[0, 0, 0]], [0.0], [onehot(label, 0.6)], [1.0]))
    _, _, logp, sw = voxel(m, [0, 0, 0])
    lp, lq, u = np.log(pm), np.log(1 - pm), np.log(1 / C)
    expect = np.full(C, u + 3 * lq)
    expect[4] = u + 2 * lp + lq
    expect[11] = u + lp + 2 * lq
    np.testing.assert_allclose(logp, expect, rtol=1e-5)
    assert sw == 3.0
    # A tie (one measurement each of 7 and 3) resolves to the lowest class index.
    m.integrate(result([[5, 0, 0], [5, 0, 0]], [0.0, 0.0], [onehot(7), onehot(3)], [1.0, 1.0]))
    s, l = divmod(int(m._voxel_flat_index(np.array([[5, 0, 0]]), False)[0]), m.store.V)
    labels, _ = m.voxel_labels(np.array([s]), np.array([l]))
    assert labels[0] == 3


def test_kimera_rule_on_depth_rays():
    """One frame looking at a wall 1 m ahead: voxels in the band get exactly one measurement;
    pixels with label 255 (unknown) add nothing."""
    pm = 0.7
    m = SemanticVoxelMap(MapConfig(fusion="bayesian", bayes_measurement_prob=pm))
    h, w = 24, 32
    K = np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])
    depth = np.full((h, w), 1.0, np.float32)
    probs = np.zeros((h, w, C), np.float32)
    probs[:, :16, 6] = 1.0  # left half: class 6
    probs[12:, 16:] = 1.0 / C  # right half: uniform (lower rows) or all zero (upper): unknown
    T = np.eye(4)
    m.integrate_depth(Frame(0.0, np.zeros((h, w, 3), np.uint8), K, T, depth=depth), probs)
    # Voxel centred on the optical axis-ish, just in front of the wall, left half of the image.
    coord = np.array([-3, 0, 24])  # centre (-0.1, 0.02, 0.98): u = 30*-0.1/0.98+15.5 = 12.4
    sdf, wt, logp, sw = voxel(m, coord)
    assert sdf == pytest.approx(1.0 - 0.98, abs=1e-6) and wt == 1.0 and sw == 1.0
    u = np.log(1 / C)
    expect = np.full(C, u + np.log(1 - pm))
    expect[6] = u + np.log(pm)
    np.testing.assert_allclose(logp, expect, rtol=1e-6)
    _, _, logp_r, sw_r = voxel(m, [3, 0, 24])  # right half, row 12: geometry but no label
    assert sw_r == 0.0 and np.allclose(logp_r, u)


def test_nan_empty_and_bad_inputs_are_skipped_and_counted():
    m = SemanticVoxelMap()
    assert m.integrate(result(np.zeros((0, 3)), [], np.zeros((0, C)), [])) == 0
    assert m.counters["empty_results"] == 1
    probs = [onehot(1), onehot(2), onehot(3), onehot(4)]
    probs[2] = probs[2].copy()
    probs[2][0] = np.nan
    n = m.integrate(result([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], [0.01, np.nan, 0.0, 0.0],
                           probs, [1.0, 1.0, 1.0, np.inf]))
    assert n == 1 and m.counters["nan_voxels_skipped"] == 3
    assert voxel(m, [0, 0, 0])[0] == pytest.approx(0.01)
    assert voxel(m, [1, 0, 0])[1] == 0.0  # block exists (voxel 0 is in it) but NaN row not fused
    assert m.integrate(result([[2 ** 21, 0, 0]], [0.0], [onehot(1)], [1.0])) == 0
    assert m.counters["out_of_range_voxels_skipped"] == 1
    with pytest.raises(GnesfError, match="voxel size"):
        m.integrate(FragmentResult(np.zeros((1, 3), np.int32), np.zeros(1), np.full((1, C), 0.05),
                                   np.ones(1), voxel_size=0.08))
    # Frames: no depth, all-invalid depth, non-rigid pose, pose far outside the map.
    K = np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])
    rgb = np.zeros((24, 32, 3), np.uint8)
    assert m.integrate_depth(Frame(0, rgb, K, np.eye(4))) == 0
    assert m.integrate_depth(Frame(0, rgb, K, np.eye(4), depth=np.zeros((24, 32), np.float32))) == 0
    bad = np.eye(4)
    bad[0, 0] = np.nan
    far = np.eye(4)
    far[0, 3] = 1e6
    for T in (bad, 2 * np.eye(4), far):
        assert m.integrate_depth(Frame(0, rgb, K, T, depth=np.ones((24, 32), np.float32))) == 0
    assert m.counters["frames_skipped_no_depth"] == 2 and m.counters["frames_skipped_bad_pose"] == 3
    assert m.num_blocks == 1


def test_memory_cap_evicts_farthest_and_stale_blocks():
    m = SemanticVoxelMap(MapConfig(max_blocks=3, eviction="farthest"))
    for bx in range(4):  # four blocks along x, one voxel each
        m.integrate(result([[8 * bx, 0, 0]], [0.0], [onehot(1)], [1.0]), camera_position=[0.0, 0, 0])
    assert m.num_blocks == 3 and m.counters["blocks_evicted"] == 1 and m.counters["evictions"] == 1
    assert m.store.find(m.store.active_keys()).min() >= 0
    assert m._voxel_flat_index(np.array([[24, 0, 0]]), False)[0] < 0  # the farthest went
    assert voxel(m, [0, 0, 0])[1] == 1.0  # the near block survives
    # Camera moves to the far end: the block at the origin is now the farthest.
    m.integrate(result([[32, 0, 0]], [0.0], [onehot(1)], [1.0]), camera_position=[1.5, 0, 0])
    assert m.num_blocks == 3 and m.counters["blocks_evicted"] == 2
    assert m._voxel_flat_index(np.array([[0, 0, 0]]), False)[0] < 0
    # Stale policy evicts the least recently updated block.
    s = SemanticVoxelMap(MapConfig(max_blocks=2, eviction="stale"))
    for bx in (0, 1, 0, 2):  # block 1 becomes the stalest before block 2 arrives
        s.integrate(result([[8 * bx, 0, 0]], [0.0], [onehot(1)], [1.0]))
    assert s.num_blocks == 2 and s._voxel_flat_index(np.array([[8, 0, 0]]), False)[0] < 0
    assert s.counters["blocks_evicted"] == 1


def test_bad_fusion_name_is_a_config_error():
    with pytest.raises(ConfigError, match="fusion"):
        SemanticVoxelMap(MapConfig(fusion="gru"))
    with pytest.raises(ConfigError, match="bayes_measurement_prob"):
        SemanticVoxelMap(MapConfig(fusion="bayesian", bayes_measurement_prob=0.4))


def test_voxels_near_surface_with_bounds():
    m = SemanticVoxelMap()
    coords = [[0, 0, 0], [1, 0, 0], [20, 0, 0], [21, 0, 0]]
    m.integrate(result(coords, [0.01, 0.5, -0.02, 0.0], [onehot(1)] * 4, [1.0] * 4))
    c, d = m.voxels_near_surface()  # 0.5 m clips to the truncation (0.12 m): still within the band
    assert sorted(map(tuple, c)) == sorted(map(tuple, coords))
    c, d = m.voxels_near_surface(band_m=0.05)
    assert sorted(map(tuple, c)) == [(0, 0, 0), (20, 0, 0), (21, 0, 0)]
    bounds = np.array([[0.7, -1, -1], [1.0, 1, 1]])  # voxel 20 centre 0.82, 21 centre 0.86 m
    c, d = m.voxels_near_surface(bounds, band_m=0.05)
    assert sorted(map(tuple, c)) == [(20, 0, 0), (21, 0, 0)]
    assert d[np.argsort(c[:, 0])].tolist() == pytest.approx([-0.02, 0.0])


@pytest.mark.parametrize("dense", [True, False])
def test_voxels_near_surface_adds_the_corners_of_surface_crossing_cells(dense, monkeypatch):
    import gnesf_ros.mapping.voxel_map as vm

    if not dense:  # force the look-up in the map's block hash
        monkeypatch.setattr(vm, "_DENSE_LOOKUP_MAX_CELLS", 0)
    m = SemanticVoxelMap()
    # along x a projective jump across the surface: +0.10 next to -0.02 (a mesh vertex between them);
    # at y = 5 a far voxel (+0.10) whose neighbours all have its sign
    coords = [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [0, 5, 0], [1, 5, 0], [2, 5, 0]]
    sdf = [0.12, 0.10, -0.02, -0.12, 0.12, 0.10, 0.03]
    m.integrate(result(coords, sdf, [onehot(1)] * len(coords), [1.0] * len(coords)))
    c, _ = m.voxels_near_surface(band_m=0.05)
    assert sorted(map(tuple, c)) == [(2, 0, 0), (2, 5, 0)]
    c, d = m.voxels_near_surface(band_m=0.05, crossings=True)
    # the crossing's far corner joins; (3, 0, 0) is negative like its neighbour; (1, 5, 0) has no sign change
    assert sorted(map(tuple, c)) == [(1, 0, 0), (2, 0, 0), (2, 5, 0)]
    assert dict(zip(map(tuple, c), d))[(1, 0, 0)] == pytest.approx(0.10)
