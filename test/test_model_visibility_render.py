"""Visibility walk and SDF rendering on hand-made SDF volumes (analytic boxes sampled on a grid)."""
import numpy as np
import torch

from gnesf_ros.model.fields import SdfField, SparseField
from gnesf_ros.model.render import composite, march, sdf_weights
from gnesf_ros.model.visibility import visible_from

torch.set_num_threads(1)
VS = 0.02
TRUNC = 0.08


def _box_sdf(p, lo, hi):
    c, h = (np.asarray(lo) + hi) / 2, (np.asarray(hi) - lo) / 2
    q = np.abs(p - c) - h
    return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)


def _field(boxes, origin=(-20, -60, -60), dims=160):
    origin = np.asarray(origin)
    idx = np.stack(np.meshgrid(*[np.arange(dims)] * 3, indexing="ij"), -1)
    pts = (idx + origin + 0.5) * VS
    sdf = np.min([_box_sdf(pts, lo, hi) for lo, hi in boxes], 0).clip(-TRUNC, TRUNC)
    return SdfField(torch.tensor(sdf, dtype=torch.float32), torch.tensor(origin), VS, TRUNC)


# camera at the origin; an occluder slab 0.3-0.4 m in front (|y|, |z| < 0.1); a wall at x = 1.4 m
OCCLUDER = ([0.3, -0.1, -0.1], [0.4, 0.1, 0.1])
WALL = ([1.4, -1.2, -1.2], [1.6, 1.2, 1.2])


def test_occluded_views_are_detected_including_points_closer_than_1m():
    field = _field([OCCLUDER, WALL])
    cams = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.9, 0.0]])  # the second camera looks past the occluder's edge
    pts = torch.tensor([[1.41, 0.0, 0.0],    # wall behind the occluder
                        [1.41, 0.8, 0.0],    # wall beside the occluder
                        [0.30, 0.0, 0.0],    # occluder front face, 0.3 m away (closer than 1 m)
                        [0.38, 0.0, 0.0],    # inside the occluder, 8 cm behind its front face (+ -> -: first surface)
                        [0.60, 0.0, 0.0]])   # free space behind the occluder
    vis = visible_from(cams, pts, field, samples=64)
    assert vis[0].tolist() == [False, True, True, True, False]
    # from (0, 0.9, 0) the segments to the wall points run beside/over the occluder
    assert bool(vis[1, 1])
    # without the occluder everything is visible from the origin
    assert visible_from(cams[:1], pts, _field([WALL]), samples=64).all()
    # walking only some pairs gives the same answers there and "visible" elsewhere
    pairs = torch.tensor([[True, False, True, False, True], [False, True, False, True, False]])
    part = visible_from(cams, pts, field, samples=64, pairs=pairs)
    assert torch.equal(part[pairs], vis[pairs]) and part[~pairs].all()


def test_render_weights_vanish_past_the_first_surface():
    near_box = ([1.0, -1, -1], [1.2, 1, 1])
    far_box = ([2.0, -1, -1], [2.2, 1, 1])
    field = _field([near_box, far_box], origin=(-10, -60, -60), dims=140)
    o = torch.zeros(3, 3)
    d = torch.tensor([[1.0, 0, 0], [1.0, 0.1, 0], [1.0, -0.1, 0.05]])
    d = d / d.norm(dim=1, keepdim=True)
    rays = march(o, d, field, near=0.1, far=2.6, samples=260, tau=0.01, trunc=TRUNC)
    assert rays.valid.all()
    assert torch.allclose(rays.weights.sum(1), torch.ones(3), atol=1e-5)
    first = 1.0 / d[:, 0]  # distance to the near box along each ray
    beyond = rays.t > first[:, None] + TRUNC + 0.011
    assert float(rays.weights[beyond].abs().max()) == 0.0
    # depth lands on the first surface; semantics (one-hot per box) render the near box's class
    depth = (rays.weights * rays.t).sum(1)
    assert (depth - first).abs().max() < 0.03
    coords = torch.stack(torch.meshgrid(*[torch.arange(-10, 130)] * 1, torch.arange(-60, 60), torch.arange(-60, 60),
                                        indexing="ij"), -1).view(-1, 3)
    x = (coords[:, 0].float() + 0.5) * VS
    labels = torch.where(x < 1.6, 3, 5)
    probs = torch.nn.functional.one_hot(labels, 8).float()
    sem = SparseField(coords, probs, VS)
    flat = rays.points.view(-1, 3)
    vals, ok = sem(flat)
    rendered, rdepth, valid = composite(rays, vals.view(3, -1, 8), ok.view(3, -1))
    assert valid.all() and rendered.argmax(1).tolist() == [3, 3, 3]
    assert (rdepth - first).abs().max() < 0.03


def test_rays_without_a_surface_are_invalid():
    s = torch.full((2, 10), 0.5)
    s[1, 5:] = -0.5
    t = torch.linspace(0, 1, 10).expand(2, -1)
    w, valid = sdf_weights(s, t, tau=0.05, trunc=0.1)
    assert valid.tolist() == [False, True]
    assert float(w[0].sum()) == 0.0


def test_sdf_field_from_voxels_reads_given_values_and_free_elsewhere():
    origin = torch.tensor([10, -4, 0])
    coords = torch.tensor([[12, -3, 1], [13, -3, 1]])
    field = SdfField.from_voxels(coords, torch.tensor([-0.5, 0.03]), origin, 8, VS, TRUNC)
    centres = (coords.float() + 0.5) * VS
    assert torch.allclose(field(centres), torch.tensor([-TRUNC, 0.03]))  # clamped to -trunc
    assert abs(float(field(torch.tensor([[(10 + 6.5) * VS, (-4 + 6.5) * VS, 6.5 * VS]]))) - TRUNC) < 1e-7
    halfway = (centres[0] + centres[1]) / 2  # trilinear between the two voxels
    assert abs(float(field(halfway[None])) - (-TRUNC + 0.03) / 2) < 1e-6
    background = torch.full((8, 8, 8), -0.01)
    field = SdfField.from_voxels(coords, torch.tensor([0.02, 0.03]), origin, 8, VS, TRUNC, background)
    assert abs(float(field(torch.tensor([[(10 + 0.5) * VS, (-4 + 0.5) * VS, 0.5 * VS]]))) + 0.01) < 1e-7
    assert abs(float(field(centres[:1])) - 0.02) < 1e-7


def test_depth_z_test_occludes_points_behind_the_measured_surface():
    from gnesf_ros.model.visibility import visible_in_depth
    from gnesf_ros.model.volume import project

    h, w = 6, 8
    K = torch.tensor([[[4.0, 0, 3.5], [0, 4.0, 2.5], [0, 0, 1]]])
    T = torch.eye(4)[None]  # camera at the origin looking along +z
    depth = torch.full((1, 1, h, w), 2.0)
    depth[0, 0, :, 6:] = 0.0  # no measurement in the two right-most columns
    pts = torch.tensor([[0.0, 0.0, 1.9], [0.0, 0.0, 2.1], [0.0, 0.0, 2.5],  # centre column: d = 2 m
                        [1.25, 0.0, 2.5]])  # projects to u = 5.5 -> pixel 6 (no depth)
    uv, z = project(pts, K, T)
    vis = visible_in_depth(depth, uv, z, (h, w), tol=0.12)
    assert vis.tolist() == [[True, True, False, True]]
