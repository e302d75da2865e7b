"""GNeSF end to end on a tiny box-room window: shapes, gradients per phase, checkpoints, rgbd voting."""
import dataclasses

import numpy as np
import pytest
import torch

from gnesf_ros.config import GnesfTrainConfig, ModelConfig
from gnesf_ros.errors import DataError, ModelError
from gnesf_ros.model.data import WindowSampler
from gnesf_ros.model.targets import TsdfTargets
from gnesf_ros.model.gnesf import GNeSF, Views
from gnesf_ros.model.train import TrainStep, _set_phase
from gnesf_ros.model.volume import project, sample_views
from gnesf_ros.types import Frame, Fragment

torch.set_num_threads(1)
TINY = ModelConfig(voxel_size_m=0.08, volume_size_vox=32, feat_channels=(8, 8, 8), geo_channels=(8, 8, 8),
                   render_samples=48, vis_samples=12, occ_threshold=0.0, threads=1)


@pytest.fixture(scope="module")
def window():
    cfg = GnesfTrainConfig(model=TINY, views=4, heldout_views=1, height=64, width=80, frames_per_scene=40,
                           train_seed_count=1, rays=48)
    return cfg, WindowSampler(cfg, scene_source="boxes").sample()


def _fragment(win):
    frames = [Frame(0.0, win.rgb[i], win.K[i], win.T[i]) for i in range(len(win.rgb))]
    return Fragment(frames, voxel_size=TINY.voxel_size_m)


def test_predict_fragment_shapes_and_grid(window):
    _, win = window
    torch.manual_seed(0)
    model = GNeSF(TINY)
    res = model.predict_fragment(_fragment(win), win.probs)
    n = len(res)
    assert n > 0 and res.coords.dtype == np.int32 and res.coords.shape == (n, 3)
    assert res.sdf.shape == (n,) and np.abs(res.sdf).max() <= 3 * 0.08 + 1e-6
    assert res.class_probs.shape == (n, 20) and np.allclose(res.class_probs.sum(1), 1, atol=1e-4)
    assert res.sem_weight.shape == (n,) and set(np.unique(res.sem_weight)) <= {0.0, 1.0}
    assert len(np.unique(res.coords, axis=0)) == n
    for key in ("features2d", "volume", "net3d", "voting", "visibility", "total"):
        assert res.stats["timings_ms"][key] >= 0
    for variant in ("direct", "logit", "prob"):
        other = model.predict_fragment(_fragment(win), win.probs, variant=variant)
        assert np.array_equal(other.coords, res.coords) and other.class_probs.shape == res.class_probs.shape


def test_bad_inputs_raise_readable_errors(window):
    _, win = window
    model = GNeSF(TINY)
    with pytest.raises(DataError):
        model.predict_fragment(_fragment(win), win.probs[:, :, :, :5])
    with pytest.raises(ModelError):
        model.predict_fragment(Fragment(_fragment(win).frames, voxel_size=0.05), win.probs)


def _grads_reach(params):
    # the voters' last bias adds one constant to every view's score: the softmax over views is
    # invariant to it, so its true gradient is 0 (any nonzero value is rounding noise)
    return [n for n, p in params if (p.grad is None or float(p.grad.abs().sum()) == 0.0)
            and not (n.startswith("voters.") and n.endswith(".score.4.bias"))]


def test_gradients_reach_every_trainable_parameter_in_both_phases(window):
    cfg, win = window
    torch.manual_seed(0)
    model = GNeSF(TINY)
    step = TrainStep(model, dataclasses.replace(cfg, model=TINY))
    _set_phase(model, "geometry")
    step(win, "geometry")["loss"].backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) > 0 and _grads_reach(trainable) == []
    model.zero_grad(set_to_none=True)
    _set_phase(model, "semantics")
    losses = step(win, "semantics")
    losses["loss"].backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert {n.split(".")[0] for n, _ in trainable} == {"voters", "direct"}
    assert _grads_reach(trainable) == []
    assert all(f"sem_{m}" in losses for m in ("direct", "logit", "prob", "prob_vis"))


def test_checkpoint_round_trip_and_errors(window, tmp_path):
    _, win = window
    torch.manual_seed(1)
    model = GNeSF(TINY)
    path = tmp_path / "w.pt"
    torch.save(model.checkpoint(), path)
    other_arch = dataclasses.replace(TINY, feat_channels=(4, 4, 4), geo_channels=(4, 4, 4))
    loaded = GNeSF.load(path, other_arch)  # the architecture comes from the file
    a = model.predict_fragment(_fragment(win), win.probs)
    b = loaded.predict_fragment(_fragment(win), win.probs)
    assert np.array_equal(a.coords, b.coords) and np.allclose(a.class_probs, b.class_probs, atol=1e-6)
    with pytest.raises(ModelError, match="not found"):
        GNeSF.load(tmp_path / "missing.pt", TINY)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError):
        GNeSF.load(tmp_path / "junk.pt", TINY)


def test_vote_semantics_on_given_geometry(window):
    _, win = window
    model = GNeSF(TINY)
    frag = _fragment(win)
    targets = TsdfTargets(win.depth_d, win.K_d, win.T_d)
    # geometry from depth: voxels near the observed surfaces in and around the fragment cube
    views = Views.from_arrays(win.rgb, win.probs, win.K, win.T)
    r = np.arange(-4, TINY.volume_size_vox + 4)
    grid = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3) + model.place(views).numpy()
    sdf, known = targets(torch.tensor((grid + 0.5) * 0.08, dtype=torch.float32), 0.24)
    near = (known & (sdf.abs() < 0.08)).numpy()
    coords = np.concatenate([grid[near], [[10000, 10000, 10000]]]).astype(np.int32)
    sdf_m = np.concatenate([sdf.numpy()[near], [0.0]]).astype(np.float32)
    probs, weight = model.vote_semantics(frag, win.probs, coords, sdf_m, 0.08, variant="prob")
    assert probs.shape == (len(coords), 20) and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert weight[-1] == 0.0 and np.allclose(probs[-1], 1 / 20)
    # without visibility: the network votes on voxels in the cube (centred on the given voxels) seen by
    # >= 2 views; the others seen by any view get the plain mean of those views' probabilities
    # the cube is centred on the voxels inside some view's frustum
    uv, z = project(torch.tensor((coords + 0.5) * 0.08, dtype=torch.float32), views.K, views.T_world_cam)
    p_views, seen = sample_views(views.probs, uv, z, views.size)
    n_seen = seen.sum(0).numpy()
    origin = model._place_on(torch.as_tensor(coords[n_seen >= 1], dtype=torch.long)).numpy()
    inside = ((coords - origin >= 0) & (coords - origin < TINY.volume_size_vox)).all(1)
    assert np.array_equal(weight > 0, n_seen >= 1)
    voted = inside & (n_seen >= 2)
    assert voted.sum() > 50 and model.vote_counts == {"voted": int(voted.sum()), "averaged": int((~voted & (n_seen >= 1)).sum()),
                                                      "unseen": int((n_seen == 0).sum())}
    averaged = np.flatnonzero(~voted & (n_seen >= 1))
    assert len(averaged) > 0
    mean = (p_views * seen[..., None]).sum(0) / seen.sum(0).clamp(min=1)[:, None]
    assert np.allclose(probs[averaged], mean.numpy()[averaged] / mean.numpy()[averaged].sum(1, keepdims=True), atol=1e-5)
    # voxels beyond model.vote_band_vox (2 x 0.08 m) are not voted on by the network: plain mean
    far_sdf = sdf_m.copy()
    far_sdf[::3] = 0.2
    probs_far, _ = model.vote_semantics(frag, win.probs, coords, far_sdf, 0.08, variant="prob")
    far = np.flatnonzero((np.arange(len(coords)) % 3 == 0) & (n_seen >= 1))
    assert len(far) > 50 and model.vote_counts["averaged"] >= len(far)
    assert np.allclose(probs_far[far], mean.numpy()[far] / mean.numpy()[far].sum(1, keepdims=True), atol=1e-5)
    model.cfg.rgbd_visibility = "sdf"
    _, weight_vis = model.vote_semantics(frag, win.probs, coords, sdf_m, 0.08, variant="prob_vis")
    assert (weight_vis <= weight).all()
    # frames with depth (rgbd_visibility "depth", the default): a z-test against the depth maps; on true
    # geometry it agrees with the SDF walk on most (view, voxel) pairs, and both find occlusions
    from gnesf_ros.model.data import box_room
    from gnesf_ros.model.fields import SdfField
    from gnesf_ros.model.visibility import visible_from, visible_in_depth

    scene = box_room(0)  # the window's scene (train_seed_count 1)
    frames = [dataclasses.replace(f, depth=scene.render(f.T_world_cam, f.K, f.size)[1]) for f in frag.frames]
    model.cfg.rgbd_visibility = "depth"
    _, weight_depth = model.vote_semantics(Fragment(frames, voxel_size=0.08), win.probs, coords, sdf_m, 0.08,
                                           variant="prob_vis")
    assert (weight_depth <= weight).all()
    # variant "mean" (no network): every voxel, voted in the cube or not, gets the mean of the views that see it
    depth_t = torch.tensor(np.stack([f.depth for f in frames]))[:, None]
    probs_mean, w_mean = model.vote_semantics(Fragment(frames, voxel_size=0.08), win.probs, coords, sdf_m, 0.08,
                                              variant="mean")
    sees = seen & visible_in_depth(depth_t, uv, z, views.size, 0.24)
    mean = ((p_views * sees[..., None]).sum(0) / sees.sum(0).clamp(min=1)[:, None]).numpy()
    ok = sees.any(0).numpy()
    # (a voxel centre computed in another order can fall on the other side of a pixel edge: <= 1 % differ)
    same = (w_mean > 0) == ok
    assert same.mean() > 0.99 and ok.sum() > 100
    agree = np.flatnonzero(ok & same & (sees.sum(0).numpy() == seen.sum(0).numpy()))  # no occlusion: no z-test edge cases
    assert len(agree) > 100
    assert np.allclose(probs_mean[agree], mean[agree] / mean[agree].sum(1, keepdims=True), atol=1e-5)
    # where the z-test drops views, voted and averaged voxels alike use only the unoccluded ones
    hidden = np.flatnonzero(ok & same & (sees.sum(0).numpy() < seen.sum(0).numpy()))
    match = np.isclose(probs_mean[hidden], mean[hidden] / mean[hidden].sum(1, keepdims=True), atol=1e-5).all(1)
    assert len(hidden) > 10 and match.mean() > 0.95  # (before the fix of the fallback: 0.17)
    band = (known & (sdf.abs() < 0.24)).numpy()  # the whole truncation band: the walk needs the negative side
    band &= ((grid - model.place(views).numpy() >= 0) & (grid - model.place(views).numpy() < TINY.volume_size_vox)).all(1)
    c = torch.as_tensor(grid[band], dtype=torch.long)
    pts = (c.float() + 0.5) * 0.08
    field = SdfField.from_voxels(c, sdf[band], model.place(views), TINY.volume_size_vox, 0.08, 0.24)
    walk = visible_from(views.centres, pts, field, samples=64)
    uv, z = project(pts, views.K, views.T_world_cam)
    _, in_image = sample_views(views.images, uv, z, views.size)
    depth = torch.tensor(np.stack([f.depth for f in frames]))[:, None]
    ztest = visible_in_depth(depth, uv, z, views.size, 0.24)
    assert (~walk & in_image).sum() > 20 and (~ztest & in_image).sum() > 20
    assert (walk == ztest)[in_image].float().mean() > 0.9


def test_warm_up_runs_both_modes_and_changes_no_prediction(window):
    _, win = window
    torch.manual_seed(0)
    model = GNeSF(TINY)
    before = model.predict_fragment(_fragment(win), win.probs)
    for rgbd in (True, False):
        assert model.warm_up(3, (48, 64), rgbd) > 0
        assert model.vote_counts.get("voted", 0) > 0 or not rgbd  # the synthetic wall was voted on
    after = model.predict_fragment(_fragment(win), win.probs)
    assert np.array_equal(before.coords, after.coords)
    np.testing.assert_allclose(before.class_probs, after.class_probs, atol=1e-6)


def test_nothing_occupied_gives_an_empty_result(window):
    _, win = window
    model = GNeSF(dataclasses.replace(TINY, occ_threshold=1.01))  # the network never keeps a voxel
    res = model.predict_fragment(_fragment(win), win.probs)
    assert len(res) == 0 and res.class_probs.shape == (0, 20) and res.sdf.shape == (0,)


@pytest.mark.parametrize("shape", [(1, 8, 6, 6, 6), (1, 16, 12, 12, 12)])
def test_onednn_conv3d_equals_the_stock_conv(shape):
    from gnesf_ros.model.geometry_net import Conv3d

    torch.manual_seed(0)
    conv = Conv3d(shape[1], 8, 3, 2, 1, bias=True)
    stock = torch.nn.Conv3d(shape[1], 8, 3, 2, 1, bias=True)
    stock.load_state_dict(conv.state_dict())
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        fast, want = conv(x), stock(x)
    assert fast.shape == want.shape and torch.allclose(fast, want, atol=1e-4)
    conv(x).sum().backward()  # training takes the stock path: gradients flow
    assert conv.weight.grad is not None and float(conv.weight.grad.abs().sum()) > 0
