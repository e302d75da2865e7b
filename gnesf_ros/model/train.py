"""Training of GNeSF on synthetic scenes (``gnesf-train gnesf``).

Phase 1 (geometry, first ``geometry_fraction`` of the steps): 2D features + 3D levels with
NeuralRecon losses against TSDFs fused from the window's depth maps (pruning keeps ground-truth
occupied voxels too, so every level sees the surface from the start).
Phase 2 (semantics): features and geometry frozen (the surface is rendered from the predicted SDF;
pruning keeps the true near-surface voxels too, so early geometry still yields rays); the voting heads
(logit, prob, prob_vis) and the direct head learn from rendered 2D losses only: semantics rendered at held-out views of the window
against their 2D label images (never 3D labels).
Multi-process: run under ``torchrun --nproc_per_node P``; gloo on CPU, DistributedDataParallel.
Outputs: ``--out`` (weights + architecture, what GNeSF.load reads), ``<out>.state.pt`` (optimiser,
step, history: --resume), ``<out>.loss.png`` and ``<out>.log.jsonl``, each written atomically
(gnesf_ros.atomic); an ``--out`` that cannot be written is refused before training starts.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from gnesf_ros.atomic import atomic_path, check_output_file, write_text
from gnesf_ros.classes import IGNORE
from gnesf_ros.config import ConfigError, GnesfTrainConfig, _apply, read_yaml_file
from gnesf_ros.errors import ModelError
from gnesf_ros.model.targets import TsdfTargets
from gnesf_ros.model.fields import SdfField, SparseField
from gnesf_ros.model.geometry_net import FACTOR
from gnesf_ros.model.gnesf import GNeSF, Views
from gnesf_ros.model.losses import geometry_loss, semantic_loss
from gnesf_ros.model.render import camera_rays, composite, march
from gnesf_ros.model.sparse_conv import VoxelHash
from gnesf_ros.model.voting import VARIANTS

if TYPE_CHECKING:
    from gnesf_ros.model.data import Window

log = logging.getLogger(__name__)


def load_train_config(path: str | Path | None) -> GnesfTrainConfig:
    """Defaults overlaid with a YAML file (keys of GnesfTrainConfig; ``model:`` holds ModelConfig keys)."""
    cfg = GnesfTrainConfig()
    if path is None:
        return cfg
    _apply(cfg, read_yaml_file(path, "training config"), "")
    cfg.model.feat_channels, cfg.model.geo_channels = tuple(cfg.model.feat_channels), tuple(cfg.model.geo_channels)
    cfg.model.occ_band_vox = tuple(cfg.model.occ_band_vox)
    cfg.occ_balance_max = tuple(cfg.occ_balance_max)
    if cfg.semantic_surface not in ("learned", "depth"):
        raise ConfigError(f"semantic_surface must be 'learned' or 'depth', got '{cfg.semantic_surface}'")
    if len(cfg.occ_balance_max) != 3 or len(cfg.model.occ_band_vox) != 3:
        raise ConfigError("occ_balance_max and model.occ_band_vox need one value per level (3)")
    return cfg


class TrainStep(nn.Module):
    """forward(window, phase) -> dict of losses ("loss" = total); wrapped by DDP in multi-process runs."""

    def __init__(self, model: GNeSF, cfg: GnesfTrainConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, win: Window, phase: str) -> dict[str, torch.Tensor]:
        views = Views.from_arrays(win.rgb, win.probs, win.K, win.T)
        targets = TsdfTargets(win.depth_d, win.K_d, win.T_d)
        return self.geometry(views, targets) if phase == "geometry" else self.semantics(views, win, targets)

    # -- phase 1
    def _level_targets(self, targets: TsdfTargets, pts: torch.Tensor, lvl: int):
        mc = self.model.cfg
        vs = mc.voxel_size_m * FACTOR ** (2 - lvl)
        trunc = mc.trunc_vox * vs
        sdf, known = targets(pts, trunc)
        return sdf / trunc, known & (sdf.abs() < mc.occ_band_vox[lvl] * vs)

    def geometry(self, views: Views, targets: TsdfTargets) -> dict[str, torch.Tensor]:
        enc = self.model.encode(views, gt_occ=lambda p, lvl: self._level_targets(targets, p, lvl)[1])
        out, total = {}, 0.0
        for lvl, level in enumerate(enc.geo.levels):
            t_tsdf, t_occ = self._level_targets(targets, level.points, lvl)
            occ, l1 = geometry_loss(level.tsdf, level.occ_logit, t_tsdf, t_occ, level.active,
                                    self.cfg.occ_pos_weight, self.cfg.occ_balance_max[lvl],
                                    self.cfg.tsdf_everywhere)
            out[f"occ{lvl}"], out[f"tsdf{lvl}"] = occ.detach(), l1.detach()
            with torch.no_grad():  # how the network's own pruning would do (the union hides it)
                pred = level.active & (torch.sigmoid(level.occ_logit) > self.model.cfg.occ_threshold)
                gt = level.active & t_occ
                out[f"rec{lvl}"] = (pred & gt).sum() / gt.sum().clamp(min=1)
                out[f"prec{lvl}"] = (pred & gt).sum() / pred.sum().clamp(min=1)
            total = total + occ + l1
        out["loss"] = total
        return out

    @torch.no_grad()
    def pruning_check(self, win: Window) -> dict[str, float]:
        """The network's own coarse-to-fine pruning (no teacher forcing), as at inference: per level,
        crec = share of the true near-surface voxels among the evaluated ones that survive, cprec =
        share of the kept voxels that are truly near the surface; fine_surface_rec = share of the
        cube's true surface voxels (|sdf| < 1 finest voxel) kept at the finest level, i.e. the recall
        of the whole pruning chain (voxels seen by < min_views views count as missed)."""
        m = self.model
        modes = [mod.training for mod in m.modules()]
        m.eval()
        views = Views.from_arrays(win.rgb, win.probs, win.K, win.T)
        targets = TsdfTargets(win.depth_d, win.K_d, win.T_d)
        enc = m.encode(views)
        for mod, mode in zip(m.modules(), modes):
            mod.training = mode
        out = {}
        for lvl, level in enumerate(enc.geo.levels):
            gt = level.active & self._level_targets(targets, level.points, lvl)[1]
            out[f"crec{lvl}"] = float((level.keep & gt).sum() / gt.sum().clamp(min=1))
            out[f"cprec{lvl}"] = float((level.keep & gt).sum() / level.keep.sum().clamp(min=1))
        # finest voxels near the true surface: children of level-1 voxels within one of their
        # voxels of it (a child within 1 finest voxel always has such a parent)
        l1, vs = enc.geo.levels[1], m.cfg.voxel_size_m
        sdf1, known1 = targets(l1.points, m.trunc_m(1))
        parents = l1.coords[known1 & (sdf1.abs() < FACTOR * vs)]
        child = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
        cand = (parents[:, None] * FACTOR + child[None]).view(-1, 3)
        sdf, known = targets((cand.to(torch.float32) + 0.5) * vs, m.trunc_m(2))
        surf = cand[known & (sdf.abs() < vs)]
        fine = enc.geo.levels[2]
        rows = VoxelHash(surf).lookup(fine.coords[fine.keep])
        kept = torch.zeros(len(surf), dtype=torch.bool)
        kept[rows[rows >= 0]] = True
        out["fine_surface_rec"] = float(kept.sum()) / max(len(surf), 1)
        out["fine_kept"] = float(fine.keep.sum())
        return out

    # -- phase 2
    def depth_field(self, enc, targets: TsdfTargets) -> SdfField:
        """The window's depth TSDF on the cube's finest grid: the finest level's voxels read it (pruning
        is teacher-forced, so they cover the true surface band), all other voxels read +trunc (free)."""
        m, fine = self.model, enc.geo.levels[2]
        tr = m.trunc_m(2)
        sdf, known = targets(fine.points, tr)
        return SdfField.from_voxels(fine.coords, torch.where(known, sdf, torch.full_like(sdf, tr)),
                                    enc.geo.origin_index, m.cfg.volume_size_vox, m.cfg.voxel_size_m, tr)

    def semantics(self, views: Views, win: Window, targets: TsdfTargets) -> dict[str, torch.Tensor]:
        m, mc = self.model, self.model.cfg
        with torch.no_grad():  # frozen geometry; pruning also keeps the true surface (as in phase 1)
            enc = m.encode(views, gt_occ=lambda p, lvl: self._level_targets(targets, p, lvl)[1])
        fine = enc.geo.levels[2]
        surface = enc.sdf if self.cfg.semantic_surface == "learned" else self.depth_field(enc, targets)
        table = VoxelHash(fine.coords)
        rng = np.random.default_rng(int(torch.randint(1 << 30, (1,))))
        rays_pts, rays, labels = [], [], []
        for t in range(win.labels_t.shape[0]):
            lab = win.labels_t[t]
            cand = np.flatnonzero(lab.ravel() != IGNORE)
            if cand.size == 0:
                continue
            pick = rng.choice(cand, size=min(self.cfg.rays, cand.size), replace=False)
            pix = torch.as_tensor(np.stack([pick % lab.shape[1], pick // lab.shape[1]], 1), dtype=torch.float32)
            o, d, _ = camera_rays(torch.as_tensor(win.K_t[t], dtype=torch.float32),
                                  torch.as_tensor(win.T_t[t], dtype=torch.float32), pix)
            rs = march(o, d, surface, mc.render_near_m, mc.render_far_m, mc.render_samples,
                       mc.render_tau_vox * mc.voxel_size_m, m.trunc_m(2))
            rays.append(rs)
            labels.append(torch.as_tensor(lab.ravel()[pick].astype(np.int64)))
        out = {"loss": sum(p.sum() * 0.0 for p in m.voters.parameters()) + sum(p.sum() * 0.0 for p in m.direct.parameters())}
        if not rays:
            return out
        # voxels that carry rendering weight: the 8 corners of every weighted sample
        pts = torch.cat([r.points[r.weights > 0] for r in rays])
        base = torch.floor(pts / mc.voxel_size_m - 0.5).long()
        corners = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
        rows = table.lookup((base[:, None] + corners[None]).view(-1, 3))
        rows = torch.unique(rows[rows >= 0])
        if rows.numel() == 0:
            return out
        total = out["loss"]
        for mode in VARIANTS:
            cls, _ = m.semantics(views, fine, rows, surface, mode)
            field = SparseField(fine.coords[rows], cls, mc.voxel_size_m)
            loss_m, acc, n = 0.0, 0.0, 0
            for rs, lab in zip(rays, labels):
                w = rs.weights > 0
                vals = rs.points.new_zeros(*rs.weights.shape, cls.shape[1])
                vvalid = torch.zeros_like(w)
                v, ok = field(rs.points[w])
                vals[w], vvalid[w] = v, ok
                rendered, _, valid = composite(rs, vals, vvalid)
                loss_m = loss_m + semantic_loss(rendered, lab, valid)
                acc += float((rendered.argmax(1) == lab)[valid].float().sum())
                n += int(valid.sum())
            out[f"sem_{mode}"] = loss_m.detach() / len(rays)
            out[f"acc_{mode}"] = torch.tensor(acc / max(n, 1))
            total = total + loss_m / len(rays)
        out["loss"] = total
        return out


class _WindowStream(torch.utils.data.IterableDataset):
    """Endless training windows; with DataLoader workers the rendering overlaps the optimiser steps."""

    def __init__(self, cfg: GnesfTrainConfig, seed_offset: int, scene_source: str):
        self.cfg, self.seed_offset, self.scene_source = cfg, seed_offset, scene_source

    def __iter__(self):
        from gnesf_ros.model.data import WindowSampler  # open3d + scene generator: only where windows are made

        info = torch.utils.data.get_worker_info()
        rank = self.seed_offset + (info.id if info else 0)
        sampler = WindowSampler(self.cfg, rank=rank, scene_source=self.scene_source)
        rng = np.random.default_rng(rank)
        pool: list = []
        while True:  # each new window is followed by window_repeats draws from the recent pool
            pool = (pool + [sampler.sample()])[-max(1, self.cfg.window_pool):]
            yield pool[-1]
            for _ in range(self.cfg.window_repeats - 1):
                yield pool[int(rng.integers(len(pool)))]


def _identity(x):
    return x


def _set_phase(model: GNeSF, phase: str) -> list[nn.Parameter]:
    geo = phase == "geometry"
    for p in list(model.features.parameters()) + list(model.geometry.parameters()):
        p.requires_grad_(geo)
    for p in list(model.voters.parameters()) + list(model.direct.parameters()):
        p.requires_grad_(not geo)
    model.train()
    if not geo:
        model.features.eval()
        model.geometry.eval()
    return [p for p in model.parameters() if p.requires_grad]


def _plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, phase in zip(axes, ("geometry", "semantics")):
        rows = [h for h in history if h["phase"] == phase]
        keys = sorted({k for h in rows for k in h if k.startswith(("occ", "tsdf", "sem_"))})
        for k in keys:
            ax.plot([h["step"] for h in rows if k in h], [h[k] for h in rows if k in h], label=k)
        ax.set_title(f"{phase} losses")
        ax.set_xlabel("step")
        if keys:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def train(cfg: GnesfTrainConfig, out: str | Path, resume: bool = False, scene_source: str = "synthetic") -> dict:
    """Run (or continue) training; returns a summary dict. Rank 0 writes every file."""
    out = Path(out)
    state_path = out.with_name(out.name + ".state.pt")
    for path in (out, state_path):  # at start, not after training
        check_output_file(path, "--out" if path == out else "training state")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = GNeSF(cfg.model)
    opt_state, start, history = None, 0, []
    if resume:
        if not state_path.is_file():
            raise ModelError(f"--resume: no training state at {state_path}")
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt_state, start, history = st["optimizer"], st["step"], st["history"]
        log.info("resumed from step %d", start)
    stream = iter(torch.utils.data.DataLoader(
        _WindowStream(cfg, 101 * rank + 7919 * start, scene_source), batch_size=None, collate_fn=_identity,
        num_workers=cfg.workers, prefetch_factor=2 if cfg.workers else None,
        # spawn, not fork: a worker forked after torch has run (e.g. after loading the --resume
        # state) can hang on the parent's OpenMP state
        multiprocessing_context="spawn" if cfg.workers else None))
    geo_steps = int(round(cfg.steps * cfg.geometry_fraction))
    step_fn, ddp, opt, phase = TrainStep(model, cfg), None, None, None
    bar = tqdm(total=cfg.steps, initial=start, disable=rank != 0, desc="gnesf-train")
    t_start = time.time()
    for step in range(start, cfg.steps):
        want = "geometry" if step < geo_steps else "semantics"
        if want != phase:
            phase = want
            params = _set_phase(model, phase)
            ddp = nn.parallel.DistributedDataParallel(step_fn, find_unused_parameters=True) if distributed else step_fn
            opt = torch.optim.Adam(params, lr=cfg.lr)
            if opt_state is not None and opt_state.get("phase") == phase:
                opt.load_state_dict(opt_state["state"])
            opt_state = None
        win = next(stream)
        losses = ddp(win, phase)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        rec = {"step": step + 1, "phase": phase, **{k: round(float(v.detach()), 5) for k, v in losses.items()}}
        if rank == 0 and phase == "geometry" and cfg.log_every > 0 and (step + 1) % cfg.log_every == 0:
            rec.update({k: round(v, 4) for k, v in step_fn.pruning_check(win).items()})
            log.info("step %d pruning check: %s", step + 1, {k: v for k, v in rec.items() if k[:1] in "cf"})
        history.append(rec)
        bar.update(1)
        bar.set_postfix(phase=phase[:3], loss=f"{rec['loss']:.3f}")
        last = step + 1 == cfg.steps
        if rank == 0 and (last or (step + 1) % cfg.save_every == 0):
            _save(model, opt, phase, step + 1, history, cfg, out, state_path, world)
    bar.close()
    summary = {"steps": cfg.steps, "world_size": world, "seconds": round(time.time() - t_start, 1),
               "final": history[-1] if history else {}, "out": str(out)}
    if distributed:
        dist.barrier()
    return summary


def _save(model, opt, phase, step, history, cfg, out: Path, state_path: Path, world: int) -> None:
    """Weights, training state, log and plot; each file atomically (a kill keeps the last save)."""
    meta = {"train_config": dataclasses.asdict(cfg), "step": step, "world_size": world,
            "final_losses": history[-1] if history else {}}
    with atomic_path(out) as tmp:
        torch.save(model.checkpoint(meta=meta), tmp)
    with atomic_path(state_path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": {"phase": phase, "state": opt.state_dict()},
                    "step": step, "history": history}, tmp)
    write_text(out.with_name(out.name + ".log.jsonl"), "".join(json.dumps(h) + "\n" for h in history))
    _plot(history, out.with_name(out.name + ".loss.png"))


def main(args) -> int:
    """CLI body: args.config, args.out, args.steps, args.resume, args.scenes, args.threads."""
    cfg = load_train_config(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.threads is not None:
        cfg.threads = args.threads
    if cfg.steps < 1:
        raise ConfigError("--steps must be >= 1")
    summary = train(cfg, args.out, resume=args.resume, scene_source=args.scenes)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0
