"""Fragment volume: projection, bilinear sampling, mean/var pooling, frusta-based placement."""
import numpy as np
import pytest
import torch

from gnesf_ros.model.volume import feature_volume, mean_var, place_volume, project, sample_views

torch.set_num_threads(1)
K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])


def _look(eye, target, up):
    f = np.asarray(target, float) - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    T = np.eye(4)
    T[:3, :3] = np.stack([r, np.cross(f, r), f], 1)
    T[:3, 3] = eye
    return T


def test_project_and_sample_hit_the_right_pixel():
    T = _look(np.array([1.0, 2.0, 3.0]), [1.0, 2.0, 5.0], [0, -1, 0])  # identity rotation, shifted
    img = torch.zeros(1, 1, 48, 64)
    img[0, 0, 30, 40] = 7.0
    # the world point that projects exactly onto pixel (u=40, v=30) at depth 2 m
    p = np.linalg.inv(K) @ np.array([40.0, 30.0, 1.0]) * 2.0 + T[:3, 3]
    pts = torch.tensor(p[None], dtype=torch.float32)
    uv, z = project(pts, torch.tensor(K[None], dtype=torch.float32), torch.tensor(T[None], dtype=torch.float32))
    assert torch.allclose(uv[0, 0], torch.tensor([40.0, 30.0]), atol=1e-3) and abs(float(z[0, 0]) - 2.0) < 1e-5
    vals, valid = sample_views(img, uv, z, (48, 64))
    assert bool(valid[0, 0]) and abs(float(vals[0, 0, 0]) - 7.0) < 1e-3
    # a half-resolution map of the same image extent samples the same place
    small = torch.nn.functional.avg_pool2d(img, 2) * 4
    v2, _ = sample_views(small, uv, z, (48, 64))
    assert float(v2[0, 0, 0]) > 0


def test_points_behind_or_outside_are_invalid():
    T = np.eye(4)
    pts = torch.tensor([[0.0, 0, -1.0], [100.0, 0, 1.0], [0.0, 0, 1.0]])
    uv, z = project(pts, torch.tensor(K[None], dtype=torch.float32), torch.tensor(T[None], dtype=torch.float32))
    _, valid = sample_views(torch.ones(1, 1, 48, 64), uv, z, (48, 64))
    assert valid[0].tolist() == [False, False, True]


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_mean_var_matches_numpy_and_min_views(layout):
    g = torch.Generator().manual_seed(1)
    vals = torch.randn(5, 30, 4, generator=g)
    valid = torch.rand(5, 30, generator=g) > 0.4
    # sample_views returns N x P x C as a view of N x C x P memory; a concatenation is N x P x C memory
    stored = vals.permute(0, 2, 1).contiguous().permute(0, 2, 1) if layout == "channels_first" else vals.clone()
    mean, var, count = mean_var(stored, valid, min_views=2)
    for p in range(30):
        v = vals[valid[:, p], p].numpy()
        assert count[p] == len(v)
        if len(v) >= 2:
            assert np.allclose(mean[p].numpy(), v.mean(0), atol=1e-5)
            assert np.allclose(var[p].numpy(), v.var(0), atol=1e-5)
        else:
            assert float(mean[p].abs().sum()) == 0 and float(var[p].abs().sum()) == 0


def test_feature_volume_concatenates_mean_and_var():
    T = np.stack([np.eye(4)] * 3)
    maps = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 48, 64).contiguous()
    B, count, _ = feature_volume(maps, torch.tensor([[0.0, 0, 2.0]]), torch.tensor(np.stack([K] * 3), dtype=torch.float32),
                                 torch.tensor(T, dtype=torch.float32), (48, 64))
    assert count.tolist() == [3]
    assert torch.allclose(B[0], torch.tensor([1.0, 1.0, 2 / 3, 2 / 3]), atol=1e-5)


def test_place_volume_follows_the_frusta_not_the_world_up_axis():
    # cameras looking along -y (world "up" is +x here): the cube centre lies in front of them
    Ts = np.stack([_look(np.array([0.0, 0, 0]) + [0, 0, 0.2 * i], [0.0, -3, 0.2 * i], [1.0, 0, 0]) for i in range(3)])
    Ks = np.stack([K] * 3)
    corner = place_volume(Ks, Ts, (48, 64), max_depth=3.0, voxel_size=0.04, dims=64, align_vox=4)
    assert (corner % 4 == 0).all()
    centre = (corner + 32) * 0.04
    assert -2.0 < centre[1] < -1.0 and abs(centre[0]) < 0.2 and abs(centre[2] - 0.2) < 0.2
