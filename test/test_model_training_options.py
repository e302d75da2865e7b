"""Geometry-loss options (class-balanced occupancy weight, TSDF everywhere) and the pruning check."""
import math

import torch

from gnesf_ros.config import GnesfTrainConfig, ModelConfig
from gnesf_ros.model.data import WindowSampler
from gnesf_ros.model.gnesf import GNeSF
from gnesf_ros.model.losses import geometry_loss
from gnesf_ros.model.train import TrainStep

torch.set_num_threads(1)


def _inputs():
    tsdf = torch.zeros(5)
    logit = torch.zeros(5)  # p = 0.5 everywhere: every BCE term is log 2
    target_tsdf = torch.tensor([0.1, 1.0, 1.0, -0.5, 1.0])
    occ = torch.tensor([True, False, False, False, False])
    known = torch.tensor([True, True, True, True, False])
    return tsdf, logit, target_tsdf, occ, known


def test_fixed_positive_weight_matches_hand_computed_bce():
    bce, l1 = geometry_loss(*_inputs(), pos_weight=1.5)
    assert math.isclose(float(bce), (1.5 + 3) * math.log(2) / 4, rel_tol=1e-6)  # 1 positive, 3 negatives known
    assert math.isclose(float(l1), math.log(1.1), rel_tol=1e-6)  # only the occupied voxel


def test_balanced_weight_is_negatives_over_positives_and_capped():
    bce, _ = geometry_loss(*_inputs(), balance_max=10.0)
    assert math.isclose(float(bce), (3 + 3) * math.log(2) / 4, rel_tol=1e-6)  # weight 3 / 1
    capped, _ = geometry_loss(*_inputs(), balance_max=2.0)
    assert math.isclose(float(capped), (2 + 3) * math.log(2) / 4, rel_tol=1e-6)


def test_tsdf_everywhere_adds_a_mean_over_the_other_known_voxels():
    _, l1 = geometry_loss(*_inputs(), tsdf_everywhere=True)
    expect = math.log(1.1) + (2 * math.log(2.0) + math.log(1.5)) / 3  # surface mean + mean of the other known
    assert math.isclose(float(l1), expect, rel_tol=1e-6)


def _step(bias: float):
    model_cfg = ModelConfig(voxel_size_m=0.08, volume_size_vox=32, feat_channels=(8, 8, 8), geo_channels=(8, 8, 8),
                            render_samples=48, vis_samples=12, threads=1)
    cfg = GnesfTrainConfig(model=model_cfg, views=4, heldout_views=1, height=64, width=80, frames_per_scene=40,
                           train_seed_count=1)
    torch.manual_seed(0)
    model = GNeSF(model_cfg)
    for head in model.geometry.heads:  # force "keep everything" / "keep nothing"
        torch.nn.init.zeros_(head.occ.weight)
        torch.nn.init.constant_(head.occ.bias, bias)
    return TrainStep(model, cfg), WindowSampler(cfg, scene_source="boxes").sample()


def test_pruning_check_bounds():
    step, win = _step(-50.0)
    none = step.pruning_check(win)
    assert none["crec0"] == 0.0 and none["fine_surface_rec"] == 0.0 and none["fine_kept"] == 0.0
    step, win = _step(50.0)
    everything = step.pruning_check(win)
    assert everything["crec0"] == 1.0 and everything["crec1"] == 1.0 and everything["crec2"] == 1.0
    # every surface voxel seen by >= 2 views survives; the box room is mostly seen by several views
    assert 0.5 < everything["fine_surface_rec"] <= 1.0
    assert step.model.training  # the check restores the train/eval state


def test_fine_keep_tsdf_band_adds_the_predicted_surface_band():
    _, win = _step(0.0)
    from gnesf_ros.model.gnesf import Views

    cfg = ModelConfig(voxel_size_m=0.08, volume_size_vox=32, feat_channels=(8, 8, 8), geo_channels=(8, 8, 8),
                      threads=1, fine_keep_tsdf_band=0.5)
    torch.manual_seed(0)
    model = GNeSF(cfg).eval()
    for head in model.geometry.heads[:2]:  # coarse levels keep everything
        torch.nn.init.zeros_(head.occ.weight)
        torch.nn.init.constant_(head.occ.bias, 50.0)
    torch.nn.init.zeros_(model.geometry.heads[2].occ.weight)
    torch.nn.init.constant_(model.geometry.heads[2].occ.bias, -50.0)  # finest occupancy keeps nothing
    with torch.no_grad():
        fine = model.encode(Views.from_arrays(win.rgb, win.probs, win.K, win.T)).geo.levels[2]
    assert fine.tsdf.numel() > 0
    assert torch.equal(fine.keep, fine.tsdf.abs() < 0.5)


def test_resume_with_a_data_worker(tmp_path, capsys):
    """A DataLoader worker started after --resume loaded the state must not hang (spawned, not forked)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cfg = tmp_path / "tiny_worker.yaml"
    cfg.write_text((root / "config" / "model_train_tiny.yaml").read_text().replace("\nworkers: 0", "\nworkers: 1"))
    out = tmp_path / "w.pt"
    base = [sys.executable, "-m", "gnesf_ros.cli.train", "gnesf", "--config", str(cfg), "--out", str(out),
            "--scenes", "boxes"]
    for extra in (["--steps", "1"], ["--steps", "2", "--resume"]):
        proc = subprocess.run(base + extra, cwd=root, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.load(str(out) + ".state.pt", weights_only=False)["step"] == 2


def test_semantic_phase_on_the_depth_surface():
    """semantic_surface=depth: rays and visibility use the window's depth TSDF, which the finest voxels read."""
    from gnesf_ros.model.gnesf import Views
    from gnesf_ros.model.targets import TsdfTargets

    step, win = _step(0.0)
    step.cfg.semantic_surface = "depth"
    m = step.model
    views = Views.from_arrays(win.rgb, win.probs, win.K, win.T)
    targets = TsdfTargets(win.depth_d, win.K_d, win.T_d)
    with torch.no_grad():
        enc = m.encode(views, gt_occ=lambda p, lvl: step._level_targets(targets, p, lvl)[1])
    field = step.depth_field(enc, targets)
    fine = enc.geo.levels[2]
    sdf, known = targets(fine.points, m.trunc_m(2))
    assert known.any() and (sdf[known] < 0).any() and (sdf[known] > 0).any()  # the true surface is inside
    assert torch.allclose(field(fine.points[known]), sdf[known], atol=1e-5)
    out = step(win, "semantics")
    out["loss"].backward()
    assert all(p.grad is not None for p in m.voters.parameters())
    assert 0.0 <= float(out["acc_prob"]) <= 1.0 and float(out["sem_prob"]) > 0
