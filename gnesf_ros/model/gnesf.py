"""GNeSF network: 2D features -> fragment volume -> coarse-to-fine geometry -> soft semantic voting.

Public API (DESIGN.md / INTERFACES.md):
    model = GNeSF.load("models/gnesf_synthetic.pt", cfg.model, device="cpu")
    result = model.predict_fragment(fragment, probs)            # rgb mode: learned geometry
    class_probs, sem_weight = model.vote_semantics(fragment, probs, coords, sdf, voxel_size)  # rgbd mode
probs: N x H x W x C float32 per-view class probabilities (rows sum to 1) at the frames' image size.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gnesf_ros.config import ModelConfig
from gnesf_ros.errors import DataError, ModelError
from gnesf_ros.model.feature2d import build_feature_net
from gnesf_ros.model.fields import SdfField
from gnesf_ros.model.geometry_net import FACTOR, GeometryNet, GeometryOutput, LevelOutput
from gnesf_ros.model.heads import DirectHead
from gnesf_ros.model.sparse_conv import VoxelHash
from gnesf_ros.model.visibility import visible_from, visible_in_depth
from gnesf_ros.model.volume import in_image, place_volume, project, sample_views
from gnesf_ros.model.voting import MEAN, VARIANTS, VoteScorer, combine, mean_vote
from gnesf_ros.types import Fragment, FragmentResult, Frame

log = logging.getLogger(__name__)

ARCH_FIELDS = ("voxel_size_m", "volume_size_vox", "trunc_vox", "feat_channels", "geo_channels", "sparse_convs",
               "vote_hidden", "occ_band_vox", "backbone")
STRICT_ARCH = {"backbone": "small"}  # must equal the config (not taken from the checkpoint); value when absent
CHECKPOINT_VERSION = 1
WITH_VISIBILITY = ("prob_vis", MEAN)  # voting variants that drop occluded views


@dataclass
class Views:
    """Network inputs of one window. images N x 3 x H x W in [0, 1]; probs N x C x H x W; K N x 3 x 3 (pixels
    at size); T_world_cam N x 4 x 4; size (H, W); depth N x 1 x H x W metres (rgbd visibility) or None.
    images and probs keep the channels-last memory of the arrays they come from: grid_sample reads a
    point's C values side by side (1.7x faster on CPU) and no 55 MB transpose copy is made per window."""

    images: torch.Tensor
    probs: torch.Tensor
    K: torch.Tensor
    T_world_cam: torch.Tensor
    size: tuple[int, int]
    depth: torch.Tensor | None = None

    @staticmethod
    def from_arrays(rgb: np.ndarray, probs: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray,
                    device: str | torch.device = "cpu", depth: np.ndarray | None = None) -> "Views":
        """rgb N x H x W x 3 uint8, probs N x H x W x C, K N x 3 x 3, T N x 4 x 4, depth N x H x W m -> Views."""
        rgb, probs = np.asarray(rgb), np.asarray(probs)
        if rgb.ndim != 4 or probs.ndim != 4 or rgb.shape[:3] != probs.shape[:3]:
            raise DataError(f"expected rgb N x H x W x 3 and probs N x H x W x C of the same N, H, W; got "
                            f"{rgb.shape} and {probs.shape}")
        h, w = rgb.shape[1:3]
        if h % 16 or w % 16:
            raise DataError(f"image size {h}x{w} must be divisible by 16 (the 2D network's stride)")
        T = np.asarray(T_world_cam, np.float64)
        if not np.isfinite(T).all():
            raise DataError("a view pose is not finite")
        if depth is not None and np.shape(depth) != rgb.shape[:3]:
            raise DataError(f"depth must be N x H x W = {rgb.shape[:3]}, got {np.shape(depth)}")
        f32 = dict(dtype=torch.float32, device=device)
        return Views(torch.as_tensor(rgb, device=device).permute(0, 3, 1, 2).float() / 255.0,
                     torch.as_tensor(probs, **f32).permute(0, 3, 1, 2),  # channels-last: see Views
                     torch.as_tensor(np.asarray(K), **f32), torch.as_tensor(T, **f32), (h, w),
                     None if depth is None else torch.nan_to_num(torch.as_tensor(np.asarray(depth), **f32))[:, None])

    @property
    def centres(self) -> torch.Tensor:
        return self.T_world_cam[:, :3, 3]


@dataclass
class Encoded:
    """Forward state shared by geometry, voting and rendering."""

    maps: list[torch.Tensor]
    geo: GeometryOutput
    sdf: SdfField | None  # None when the finest level was not run


class GNeSF(nn.Module):
    """GNeSF on a CPU budget: FPN features, dense 16/8 cm + sparse 4 cm geometry, four semantic heads
    (``direct``, ``logit``, ``prob``, ``prob_vis`` voting) sharing the geometry backbone."""

    def __init__(self, cfg: ModelConfig | None = None, num_classes: int = 20, pretrained: bool = True):
        """``pretrained``: initialise a pretrained 2D backbone from its package (False when weights follow)."""
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        if cfg.volume_size_vox % 4:
            raise ModelError(f"model.volume_size_vox must be divisible by 4, got {cfg.volume_size_vox}")
        self.num_classes = num_classes
        fc, gc = tuple(cfg.feat_channels), tuple(cfg.geo_channels)
        self.features = build_feature_net(cfg.backbone, fc, pretrained)
        self.geometry = GeometryNet(fc, gc, cfg.occ_threshold, cfg.min_views, cfg.sparse_convs, cfg.max_fine_voxels,
                                    cfg.fine_keep_tsdf_band)
        view_c = fc[2] + 3 + num_classes
        self.voters = nn.ModuleDict({m: VoteScorer(view_c, gc[2], cfg.vote_hidden) for m in VARIANTS if m != "direct"})
        self.direct = DirectHead(gc[2], num_classes)
        self.timings: dict[str, float] = {}
        self.vote_counts: dict[str, int] = {}  # of the last vote_semantics call

    # ----------------------------------------------------------------- geometry
    def trunc_m(self, level: int = 2) -> float:
        return self.cfg.trunc_vox * self.cfg.voxel_size_m * FACTOR ** (2 - level)

    def place(self, views: Views) -> torch.Tensor:
        o = place_volume(views.K.cpu().numpy(), views.T_world_cam.cpu().numpy(), views.size, self.cfg.max_depth_m,
                         self.cfg.voxel_size_m, self.cfg.volume_size_vox, FACTOR ** 2)
        return torch.as_tensor(o, device=views.K.device)

    def encode(self, views: Views, gt_occ=None, origin_index: torch.Tensor | None = None, fine: bool = True) -> Encoded:
        """2D features + geometry (all levels, or the dense ones with fine=False) + the finest SDF field.
        gt_occ: see GeometryNet.forward."""
        t0 = time.perf_counter()
        maps = self.features(views.images)
        t1 = time.perf_counter()
        origin = self.place(views) if origin_index is None else origin_index
        geo = self.geometry(maps, views.K, views.T_world_cam, views.size, origin, self.cfg.volume_size_vox,
                            self.cfg.voxel_size_m, gt_occ, fine)
        t2 = time.perf_counter()
        self.timings = {"features2d": 1e3 * (t1 - t0), "volume": self.geometry.timings.get("volume", 0.0),
                        "net3d": 1e3 * (t2 - t1) - self.geometry.timings.get("volume", 0.0)}
        return Encoded(maps, geo, self.sdf_field(geo) if fine else None)

    def sdf_field(self, geo: GeometryOutput, fine: LevelOutput | None = None) -> SdfField:
        """Finest-resolution SDF (metres): kept level-1 voxels upsampled, overwritten by the finest
        level's voxels; pruned or unseen space reads +trunc (free / unknown never occludes)."""
        l1, fine = geo.levels[1], fine if fine is not None else geo.levels[2]
        tr = self.trunc_m(2)
        d1, d = l1.dims, self.cfg.volume_size_vox
        coarse = torch.where(l1.keep, l1.tsdf.detach() * self.trunc_m(1), torch.full_like(l1.tsdf, tr))
        grid = torch.nn.functional.interpolate(coarse.view(1, 1, d1, d1, d1), scale_factor=2, mode="trilinear",
                                               align_corners=False).clamp(-tr, tr)
        return SdfField.from_voxels(fine.coords, fine.tsdf.detach() * tr, geo.origin_index, d,
                                    self.cfg.voxel_size_m, tr, background=grid)

    # ----------------------------------------------------------------- semantics
    def semantics(self, views: Views, fine: LevelOutput, rows: torch.Tensor, sdf: SdfField, mode: str):
        """Class distribution of the finest-level voxels ``rows`` (M int64): (M x C probs, M sem_weight)."""
        if mode not in VARIANTS + (MEAN,):
            raise ModelError(f"unknown voting variant '{mode}' (choose from {', '.join(VARIANTS + (MEAN,))})")
        geo_feats = fine.feats[rows]
        if mode == "direct":
            any_view = fine.count[rows] > 0
            return torch.softmax(self.direct(geo_feats), 1), any_view.to(geo_feats.dtype)
        t0 = time.perf_counter()
        pts = fine.points[rows]
        feats, valid, z = (t[:, rows] for t in fine.per_view)
        uv, _ = project(pts, views.K, views.T_world_cam)
        probs, _ = sample_views(views.probs, uv, z, views.size)
        if mode in WITH_VISIBILITY:
            t1 = time.perf_counter()
            valid = valid & self._unoccluded(views, pts, uv, z, sdf, valid)
            self.timings["visibility"] = 1e3 * (time.perf_counter() - t1)
        if mode == MEAN:
            out = mean_vote(probs, valid)
        else:
            dirs = pts[None] - views.centres[:, None]
            dirs = dirs / dirs.norm(dim=2, keepdim=True).clamp(min=1e-6)
            rgb, _ = sample_views(views.images, uv, z, views.size)
            scores = self.voters[mode](torch.cat([feats, rgb, probs], 2), valid, geo_feats, dirs, z / self.cfg.max_depth_m)
            out = combine(scores, probs, mode)
        self.timings["voting"] = 1e3 * (time.perf_counter() - t0) - self.timings.get("visibility", 0.0)
        return out

    # ----------------------------------------------------------------- public API
    def _views(self, fragment: Fragment, probs: np.ndarray, with_depth: bool = False) -> Views:
        frames = fragment.frames
        if len(frames) < self.cfg.min_views:
            raise DataError(f"a fragment needs >= {self.cfg.min_views} frames, got {len(frames)}")
        if abs(fragment.voxel_size - self.cfg.voxel_size_m) > 1e-9:
            raise ModelError(f"fragment voxel size {fragment.voxel_size} m differs from the model's "
                             f"{self.cfg.voxel_size_m} m (set model.voxel_size_m and map.voxel_size_m alike)")
        if probs.shape[0] != len(frames) or probs.shape[-1] != self.num_classes:
            raise DataError(f"probs must be {len(frames)} x H x W x {self.num_classes}, got {probs.shape}")
        dev = next(self.parameters()).device
        depth = np.stack([f.depth for f in frames]) if with_depth and all(f.depth is not None for f in frames) else None
        return Views.from_arrays(np.stack([f.rgb for f in frames]), probs, np.stack([f.K for f in frames]),
                                 np.stack([f.T_world_cam for f in frames]), dev, depth)

    def _threads(self):
        if self.cfg.threads > 0 and next(self.parameters()).device.type == "cpu":
            torch.set_num_threads(self.cfg.threads)

    @torch.no_grad()
    def predict_fragment(self, fragment: Fragment, probs: np.ndarray, variant: str | None = None) -> FragmentResult:
        """Learned geometry + semantics of one window. Output voxels: finest level, occupancy > threshold."""
        self._threads()
        self.eval()
        t0 = time.perf_counter()
        views = self._views(fragment, probs)
        enc = self.encode(views)
        fine = enc.geo.levels[2]
        rows = torch.nonzero(fine.keep)[:, 0]
        cls, sem_w = self.semantics(views, fine, rows, enc.sdf, variant or self.cfg.voting)
        timings = dict(self.timings, total=1e3 * (time.perf_counter() - t0))
        return FragmentResult(coords=fine.coords[rows].cpu().numpy().astype(np.int32),
                              sdf=(fine.tsdf[rows] * self.trunc_m(2)).cpu().numpy().astype(np.float32),
                              class_probs=cls.cpu().numpy().astype(np.float32),
                              weight=np.ones(len(rows), np.float32), voxel_size=self.cfg.voxel_size_m,
                              sem_weight=sem_w.cpu().numpy().astype(np.float32),
                              stats={"timings_ms": timings, "evaluated_voxels": int(fine.coords.shape[0])})

    @torch.no_grad()
    def vote_semantics(self, fragment: Fragment, probs: np.ndarray, coords: np.ndarray, sdf: np.ndarray,
                       voxel_size: float, variant: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Semantics on given geometry (rgbd mode): coords M x 3 int32 global voxels, sdf M metres.

        The network votes on the voxels within ``model.vote_band_vox`` of the surface; the fragment cube
        is centred on those that lie in some view. Voxels farther from the surface (the Mapper passes
        the far corners of surface-crossing cells, which mesh vertices also read), outside the cube or
        seen by fewer than min_views views get the plain mean of the probabilities of the views that
        see them (uniform votes); voxels no view sees get uniform probabilities and weight 0.
        ``vote_counts`` then holds {"voted", "averaged", "unseen"}. prob_vis occlusion: a z-test
        against the frames' depth maps (model.rgbd_visibility "depth", when every frame has depth),
        else the SDF walk on the given geometry."""
        self._threads()
        self.eval()
        if abs(voxel_size - self.cfg.voxel_size_m) > 1e-9:
            raise ModelError(f"voxel size {voxel_size} m differs from the model's {self.cfg.voxel_size_m} m")
        if self.cfg.rgbd_visibility not in ("depth", "sdf"):
            raise ModelError(f"model.rgbd_visibility must be 'depth' or 'sdf', got '{self.cfg.rgbd_visibility}'")
        views = self._views(fragment, probs, with_depth=self.cfg.rgbd_visibility == "depth")
        out = np.full((len(coords), self.num_classes), 1.0 / self.num_classes, np.float32)
        weight = np.zeros(len(coords), np.float32)
        c_all = torch.as_tensor(np.asarray(coords), dtype=torch.long, device=views.K.device)
        sdf_all = torch.as_tensor(np.asarray(sdf), dtype=torch.float32, device=views.K.device)
        # only voxels inside some view's frustum concern this fragment (the map region passed in
        # also holds voxels that earlier windows saw)
        mode = variant or self.cfg.voting
        uv, z = project((c_all.to(torch.float32) + 0.5) * voxel_size, views.K, views.T_world_cam)
        seen = in_image(uv, z, views.size)
        if mode in WITH_VISIBILITY and views.depth is not None:
            # voxels hidden from every view (seen by earlier windows) get no vote either way; left
            # out, the finest level runs on what this window observes, as in training
            seen &= visible_in_depth(views.depth, uv, z, views.size, self.trunc_m(2))
        sel = torch.nonzero(seen.any(0))[:, 0]
        c, sdf_t = c_all[sel], sdf_all[sel]
        self.vote_counts = {"voted": 0, "averaged": 0, "unseen": len(coords)}
        if not len(c):
            return out, weight
        d = self.cfg.volume_size_vox
        near = sdf_t.abs() <= self.cfg.vote_band_vox * voxel_size  # the network votes on these
        enc = self.encode(views, origin_index=self._place_on(c[near] if near.any() else c), fine=False)
        origin = enc.geo.origin_index
        local = c - origin
        inside = ((local >= 0) & (local < d)).all(1)
        fine = self.geometry.sparse_level(enc.maps[2], views.K, views.T_world_cam, views.size, origin,
                                          self.cfg.voxel_size_m, enc.geo.levels[1], local[inside & near])
        field = SdfField.from_voxels(c[inside], sdf_t[inside], origin, d, self.cfg.voxel_size_m, self.trunc_m(2))
        rows = VoxelHash(fine.coords).lookup(c)
        sel_np = sel.cpu().numpy()
        hit = torch.nonzero(rows >= 0)[:, 0]
        voted_at = sel_np[hit.cpu().numpy()]  # rows of the outputs
        if hit.numel():
            cls, w = self.semantics(views, fine, rows[hit], field, mode)
            out[voted_at], weight[voted_at] = cls.cpu().numpy(), w.cpu().numpy()
        rest = torch.nonzero(rows < 0)[:, 0]
        averaged_at = sel_np[rest.cpu().numpy()]
        if rest.numel():
            cls, w = self.average_views(views, (c[rest].to(torch.float32) + 0.5) * voxel_size,
                                        mode in WITH_VISIBILITY)
            out[averaged_at], weight[averaged_at] = cls.cpu().numpy(), w.cpu().numpy()
        averaged = int(weight[averaged_at].sum())
        self.vote_counts = {"voted": int(weight.sum()) - averaged, "averaged": averaged,
                            "unseen": int((weight == 0).sum())}
        return out, weight

    @torch.no_grad()
    def warm_up(self, views: int, size: tuple[int, int], rgbd: bool) -> float:
        """One forward on a synthetic window (``views`` frames of ``size`` (H, W) facing a wall 1.5 m
        ahead) so that the first real fragment does not pay for allocations and kernel set-up
        (~0.2-0.4 s on a 2-core CPU). rgbd: ``vote_semantics``, else ``predict_fragment``. Returns seconds."""
        t0 = time.perf_counter()
        h, w = size
        K = np.array([[0.9 * w, 0.0, w / 2.0], [0.0, 0.9 * w, h / 2.0], [0.0, 0.0, 1.0]])
        rng = np.random.default_rng(0)
        frames = []
        for i in range(max(views, self.cfg.min_views)):
            T = np.eye(4)
            T[0, 3] = 0.05 * i  # a sideways sweep, as a keyframe window would move
            frames.append(Frame(float(i), rng.integers(0, 256, (h, w, 3), dtype=np.uint8), K, T,
                                depth=np.full((h, w), 1.5, np.float32)))
        probs = np.full((len(frames), h, w, self.num_classes), 1.0 / self.num_classes, np.float32)
        fragment = Fragment(frames, voxel_size=self.cfg.voxel_size_m)
        if rgbd:
            vs = self.cfg.voxel_size_m
            x = np.arange(-0.8, 0.8, vs)
            gx, gy = np.meshgrid(x, x * h / w)
            wall = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, 1.5)], 1)
            coords = np.unique(np.floor(wall / vs).astype(np.int32), axis=0)
            self.vote_semantics(fragment, probs, coords, np.zeros(len(coords), np.float32), vs)
        else:
            self.predict_fragment(fragment, probs)
        return time.perf_counter() - t0

    def _place_on(self, coords: torch.Tensor) -> torch.Tensor:
        """Cube origin (finest voxels) centred on the median of voxels M x 3, snapped like ``place``."""
        corner = coords.median(0).values.to(torch.float64) - self.cfg.volume_size_vox / 2.0
        align = FACTOR ** 2
        return (torch.round(corner / align) * align).to(torch.long)

    def average_views(self, views: Views, points: torch.Tensor, occlusion: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean class distribution of the views that see each point (world m, P x 3), without the network;
        occlusion: drop views where the point is hidden (depth z-test, needs views.depth). -> (P x C, P)."""
        uv, z = project(points, views.K, views.T_world_cam)
        probs, valid = sample_views(views.probs, uv, z, views.size)
        if occlusion:
            valid = valid & self._unoccluded(views, points, uv, z, None)
        return mean_vote(probs, valid)

    def _unoccluded(self, views: Views, points: torch.Tensor, uv: torch.Tensor, z: torch.Tensor,
                    sdf: SdfField | None, in_view: torch.Tensor | None = None) -> torch.Tensor:
        """N x M bool, views in which the points (M x 3, projected to uv / z) are not hidden: a z-test
        against views.depth when the views carry depth, else the SDF walk on ``sdf`` (None: no test),
        walked only for the pairs ``in_view`` (N x M bool) when given."""
        if views.depth is not None:
            return visible_in_depth(views.depth, uv, z, views.size, self.trunc_m(2))
        if sdf is not None:
            return visible_from(views.centres, points, sdf, self.cfg.vis_samples, self.cfg.vis_near_m,
                                pairs=in_view)
        return torch.ones_like(z, dtype=torch.bool)

    # ----------------------------------------------------------------- checkpoints
    def checkpoint(self, **extra) -> dict:
        return {"version": CHECKPOINT_VERSION, "model": self.state_dict(), "num_classes": self.num_classes,
                "arch": {k: _plain(getattr(self.cfg, k)) for k in ARCH_FIELDS}, **extra}

    @classmethod
    def load(cls, path: str | Path, cfg: ModelConfig | None = None, device: str | torch.device = "cpu") -> "GNeSF":
        """Load weights; architecture fields come from the checkpoint, runtime options (voting variant,
        thresholds, threads) from ``cfg``."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"GNeSF weights not found: {path} (train them with `gnesf-train gnesf` "
                             f"or set model.weights)")
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as e:  # "cuda" on a CPU build, a typo
            raise ModelError(f"model.device '{device}' is not usable here: {e}") from None
        try:
            ckpt = torch.load(path, map_location=device, weights_only=True)  # tensors + plain data only
        except Exception as e:  # corrupt / truncated file
            raise ModelError(f"cannot read GNeSF weights {path}: {e}") from None
        if not isinstance(ckpt, dict) or "model" not in ckpt or "arch" not in ckpt:
            raise ModelError(f"{path} is not a GNeSF checkpoint (no 'model'/'arch' entries)")
        cfg = dataclasses.replace(cfg or ModelConfig())
        for k, absent in STRICT_ARCH.items():
            found = ckpt["arch"].get(k, absent)
            if found != getattr(cfg, k):
                raise ModelError(f"{path} was trained with model.{k} = {found}"
                                 f"{'' if k in ckpt['arch'] else ' (checkpoint predates the field)'}, but the config "
                                 f"asks for {getattr(cfg, k)}: set model.{k}: {found} or use matching weights")
        for k, v in ckpt["arch"].items():
            if k in ARCH_FIELDS and k not in STRICT_ARCH and _plain(getattr(cfg, k)) != v:
                log.info("model.%s = %s taken from the checkpoint (config had %s)", k, v, getattr(cfg, k))
                setattr(cfg, k, tuple(v) if isinstance(v, list) else v)
        model = cls(cfg, int(ckpt["num_classes"]), pretrained=False)
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise ModelError(f"{path} does not match the GNeSF architecture: {str(e).splitlines()[0]}") from None
        return model.to(device).eval()


def _plain(v):
    return list(v) if isinstance(v, tuple) else v
