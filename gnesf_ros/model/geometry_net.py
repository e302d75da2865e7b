"""Coarse-to-fine geometry network (16 -> 8 -> 4 cm by default).

Levels 0 and 1 are dense 3D U-Nets over the fragment cube (dense beats sparse at 24^3 / 48^3 on a
CPU, DESIGN.md section 4); inputs outside the surviving (un-pruned) voxels are zeroed, so pruning
acts like NeuralRecon's sparse levels. Level 2 (finest) is sparse: the 8 children of every level-1
voxel with occupancy > threshold, seen by >= ``min_views`` views, run through a light
submanifold-conv head. Every level predicts a TSDF (truncation ``trunc_vox`` voxels of that level)
and an occupancy logit (target: |sdf| < ``occ_band_vox`` voxels of that level).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gnesf_ros.model.heads import GeometryHead
from gnesf_ros.model.sparse_conv import KernelMap, SubmConv3d
from gnesf_ros.model.volume import feature_volume, grid_coords

FACTOR = 2  # voxel size ratio between consecutive levels


class Conv3d(nn.Conv3d):
    """nn.Conv3d that calls oneDNN directly for CPU inference: torch's dispatch heuristic (made for 2D)
    sends small volumes (N*C*D*H <= 20480, e.g. 32 x 24^3) to a reference kernel ~12x slower than
    oneDNN here. Same parameters and results (to float rounding); training keeps the stock path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.is_grad_enabled() and torch.backends.mkldnn.is_available() \
                and x.dtype == torch.float32 and self.padding_mode == "zeros":
            return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                                            self.groups)
        return super().forward(x)


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(Conv3d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(4, c_out), nn.ReLU(inplace=True))


class DenseUNet3d(nn.Module):
    """Pointwise input projection, two full-resolution convs around one half-resolution stage.

    forward(x P x Cin with P = D^3 voxels, x-major; D) -> P x C."""

    def __init__(self, c_in: int, c: int):
        super().__init__()
        self.proj = nn.Linear(c_in, c)  # a GEMM on P x Cin (a 1x1x1 Conv3d takes a slow path on CPU)
        self.enc = _block(c, c)
        self.down = nn.Sequential(_block(c, 2 * c, 2), _block(2 * c, 2 * c))
        self.up = nn.Conv3d(2 * c, c, 1)  # applied before upsampling (both linear: they commute)
        self.dec = _block(c, c)
        self.c = c

    def forward(self, x: torch.Tensor, d: int) -> torch.Tensor:
        # P x C rows are already channels-last (x, y, z, c) memory: Conv3d runs ~1.9x faster on it at 48^3
        h = F.relu(self.proj(x)).view(1, d, d, d, self.c).permute(0, 4, 1, 2, 3)
        e = self.enc(h)
        u = F.interpolate(self.up(self.down(e)), size=e.shape[-3:], mode="trilinear", align_corners=False)
        return self.dec(e + u).permute(0, 2, 3, 4, 1).reshape(-1, self.c)


class SparseHead(nn.Module):
    """Linear projection + two residual 3x3x3 submanifold convs: M x Cin -> M x C."""

    def __init__(self, c_in: int, c: int, convs: int = 2):
        super().__init__()
        self.proj = nn.Linear(c_in, c)
        self.convs = nn.ModuleList([SubmConv3d(c, c) for _ in range(convs)])

    def forward(self, x: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        h = F.relu(self.proj(x))
        for conv in self.convs:
            h = F.relu(h + conv(h, kmap))
        return h


@dataclass
class LevelOutput:
    """One level. Dense levels: tensors over D^3 voxels (x-major); sparse level: over M voxels.

    coords: voxel indices in the global grid of this level (P x 3 int64); points: centres P x 3 m;
    tsdf P (truncation units); occ_logit P; count P (valid views); active P bool (evaluated, not pruned);
    feats P x C; keep P bool (active & occupancy > threshold)."""

    voxel_size: float
    coords: torch.Tensor
    points: torch.Tensor
    tsdf: torch.Tensor
    occ_logit: torch.Tensor
    count: torch.Tensor
    active: torch.Tensor
    feats: torch.Tensor
    keep: torch.Tensor
    dims: int = 0  # edge length of a dense level (0 = sparse)
    per_view: tuple | None = None  # sparse level: (values N x P x C, valid N x P, z N x P)


@dataclass
class GeometryOutput:
    levels: list[LevelOutput] = field(default_factory=list)
    origin_index: torch.Tensor | None = None  # 3 int64, finest voxels
    per_view: tuple | None = None  # finest level (values N x M x C, valid N x M, z N x M)


class GeometryNet(nn.Module):
    def __init__(self, feat_channels=(32, 24, 16), channels=(32, 24, 16), occ_threshold: float = 0.5,
                 min_views: int = 2, sparse_convs: int = 2, max_fine_voxels: int = 400_000,
                 fine_keep_tsdf_band: float = 0.0):
        super().__init__()
        c0, c1, c2 = channels
        f0, f1, f2 = feat_channels
        self.net0 = DenseUNet3d(2 * f0 + 1, c0)
        self.net1 = DenseUNet3d(2 * f1 + 1 + c0, c1)
        self.net2 = SparseHead(2 * f2 + 1 + c1, c2, sparse_convs)
        self.heads = nn.ModuleList([GeometryHead(c) for c in channels])
        self.channels = tuple(channels)
        self.occ_threshold = occ_threshold
        self.min_views = min_views
        self.max_fine_voxels = max_fine_voxels
        self.fine_keep_tsdf_band = fine_keep_tsdf_band  # > 0: finest voxels with |tsdf| below it are kept too
        self.timings: dict[str, float] = {}  # ms of the last forward: back-projection ("volume")

    def _volume(self, *args):
        t0 = time.perf_counter()
        out = feature_volume(*args)
        self.timings["volume"] = self.timings.get("volume", 0.0) + 1e3 * (time.perf_counter() - t0)
        return out

    def forward(self, maps: list[torch.Tensor], K: torch.Tensor, T_world_cam: torch.Tensor, size: tuple[int, int],
                origin_index: torch.Tensor, dims: int, voxel_size: float, gt_occ=None,
                fine: bool = True) -> GeometryOutput:
        """maps: per-level feature maps (coarse first, N x C_l x h_l x w_l); K N x 3 x 3 at ``size``;
        origin_index: 3 int64 (finest voxels); dims: finest cube edge (voxels, divisible by 4).
        gt_occ(points P x 3, level) -> P bool (training only): ground-truth occupancy kept from pruning.
        fine=False stops after the dense levels (rgbd mode runs the finest level on depth voxels)."""
        n = K.shape[0]
        self.timings = {}
        out = GeometryOutput(origin_index=origin_index)
        origin_m = origin_index.to(K.dtype) * voxel_size
        parent_keep, parent_feats = None, None
        for lvl in range(2):
            scale = FACTOR ** (2 - lvl)
            d, vs = dims // scale, voxel_size * scale
            coords = grid_coords(d, K.device)
            pts = origin_m + (coords.to(K.dtype) + 0.5) * vs
            cand = torch.ones(d ** 3, dtype=torch.bool, device=K.device)
            if parent_keep is not None:  # only children of kept parents are back-projected (pruning)
                up = lambda t: t.view(1, -1, d // 2, d // 2, d // 2).repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)
                cand = up(parent_keep.to(K.dtype)[None]).view(-1).bool()
            idx = torch.nonzero(cand)[:, 0]
            B_c, count_c, _ = self._volume(maps[lvl], pts[idx], K, T_world_cam, size, self.min_views)
            B = K.new_zeros(d ** 3, B_c.shape[1]).index_copy_(0, idx, B_c)
            count = torch.zeros(d ** 3, dtype=torch.long, device=K.device).index_copy_(0, idx, count_c)
            active = count >= self.min_views
            inputs = [B, (count.to(K.dtype) / n)[:, None]]
            if parent_keep is not None:
                inputs.append(up(parent_feats.t().contiguous()).view(parent_feats.shape[1], -1).t())
            x = torch.cat(inputs, 1) * active[:, None].to(K.dtype)
            net = self.net0 if lvl == 0 else self.net1
            feats = net(x, d)
            tsdf, occ = self.heads[lvl](feats)
            keep = active & (torch.sigmoid(occ) > self.occ_threshold)
            if gt_occ is not None:
                keep = keep | (active & gt_occ(pts, lvl))
            gcoords = origin_index // scale + coords
            out.levels.append(LevelOutput(vs, gcoords, pts, tsdf, occ, count, active, feats, keep, d))
            parent_keep, parent_feats = keep, feats
        if not fine:
            return out
        parent = out.levels[1]
        pidx = torch.nonzero(parent.keep)[:, 0]
        if pidx.numel() * 8 > self.max_fine_voxels:  # bound the cost when occupancy is unsure
            top = torch.topk(parent.occ_logit[pidx], self.max_fine_voxels // 8).indices
            pidx = pidx[top.sort().values]
        child = torch.stack(torch.meshgrid(*[torch.arange(2, device=K.device)] * 3, indexing="ij"), -1).view(8, 3)
        local = ((parent.coords[pidx] - origin_index // FACTOR)[:, None] * FACTOR + child[None]).view(-1, 3)
        out.levels.append(self.sparse_level(maps[2], K, T_world_cam, size, origin_index, voxel_size, parent, local, gt_occ))
        return out

    def sparse_level(self, fmap, K, T, size, origin_index, voxel_size, parent: LevelOutput, local: torch.Tensor,
                     gt_occ=None) -> LevelOutput:
        """Finest level on the given voxels (local indices M x 3 inside the cube, unique): runs the
        sparse head on those seen by >= min_views views; the result lists only those."""
        n = K.shape[0]
        d1 = parent.dims
        pl = local // FACTOR
        pidx = (pl[:, 0] * d1 + pl[:, 1]) * d1 + pl[:, 2]
        pts = origin_index.to(K.dtype) * voxel_size + (local.to(K.dtype) + 0.5) * voxel_size
        B, count, per_view = self._volume(fmap, pts, K, T, size, self.min_views)
        active = count >= self.min_views
        sel = torch.nonzero(active)[:, 0]
        coords = origin_index + local[sel]
        pts, B, count, pidx = pts[sel], B[sel], count[sel], pidx[sel]
        per_view = tuple(t[:, sel] for t in per_view)
        x = torch.cat([B, (count.to(K.dtype) / n)[:, None], parent.feats[pidx]], 1)
        feats = self.net2(x, KernelMap(coords))
        tsdf, occ = self.heads[2](feats)
        keep = torch.sigmoid(occ) > self.occ_threshold
        if self.fine_keep_tsdf_band > 0:  # the predicted TSDF band itself marks the surface region
            keep = keep | (tsdf.detach().abs() < self.fine_keep_tsdf_band)
        if gt_occ is not None:
            keep = keep | gt_occ(pts, 2)
        act = torch.ones_like(keep)
        return LevelOutput(voxel_size, coords, pts, tsdf, occ, count, act, feats, keep, 0, per_view)
