"""Geometry targets: a projective TSDF fused from depth maps (as NeuralRecon's ground truth), queried
at any points. Depth maps D x H x W metres (0 = invalid), K D x 3 x 3 at that size, T_world_cam D x 4 x 4."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class TsdfTargets:
    """Projective TSDF fused from depth maps, evaluated at arbitrary points (metres, world frame).

    __call__(points P x 3, trunc m) -> (sdf P metres in [-trunc, trunc], known P bool)."""

    def __init__(self, depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray):
        self.depth = torch.as_tensor(depth, dtype=torch.float32)[:, None]
        self.K = torch.as_tensor(K, dtype=torch.float32)
        self.T = torch.as_tensor(T_world_cam, dtype=torch.float32)
        self.T_inv = torch.linalg.inv(self.T)

    def __call__(self, points: torch.Tensor, trunc: float):
        cam = points[None] @ self.T_inv[:, :3, :3].transpose(1, 2) + self.T_inv[:, None, :3, 3]
        z = cam[..., 2]
        uv = (cam @ self.K.transpose(1, 2))[..., :2] / z.clamp(min=1e-6)[..., None]
        h, w = self.depth.shape[-2:]
        g = torch.stack([(uv[..., 0] + 0.5) / w * 2 - 1, (uv[..., 1] + 0.5) / h * 2 - 1], -1)
        d = F.grid_sample(self.depth, g[:, None], mode="nearest", align_corners=False)[:, 0, 0]
        sdf = d - z
        ok = (z > 0.05) & (g.abs() <= 1).all(-1) & (d > 0) & (sdf > -trunc)
        w_ = ok.float()
        n = w_.sum(0)
        fused = (sdf.clamp(-trunc, trunc) * w_).sum(0) / n.clamp(min=1)
        return torch.where(n > 0, fused, torch.full_like(fused, trunc)), n > 0
