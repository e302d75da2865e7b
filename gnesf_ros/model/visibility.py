"""Visibility of voxels from source cameras by walking the predicted SDF along the camera ray.

For view i and point x the segment from ``near`` metres in front of the camera centre o_i to x
itself is sampled (so points closer than 1 m work, unlike a fixed 1 m start). Counting sign changes
of the SDF along it: 0 (free up to x) or 1 (+ -> -: x lies on the first surface) = visible;
>= 2 (+ -> - -> + ...: another surface lies in front of x) = occluded.
"""
from __future__ import annotations

import torch

from gnesf_ros.model.fields import SdfField


def visible_from(cam_centres: torch.Tensor, points: torch.Tensor, sdf: SdfField, samples: int = 32,
                 near: float = 0.05, chunk: int = 1 << 20) -> torch.Tensor:
    """cam_centres N x 3, points M x 3 (world metres) -> N x M bool (True = x is visible from view i)."""
    n, m = cam_centres.shape[0], points.shape[0]
    out = torch.ones(n, m, dtype=torch.bool, device=points.device)
    if m == 0:
        return out
    frac = torch.linspace(0.0, 1.0, samples, device=points.device, dtype=points.dtype)
    per = max(1, chunk // samples)
    for i in range(n):
        o = cam_centres[i]
        for s in range(0, m, per):
            x = points[s:s + per]
            d = x - o
            length = d.norm(dim=1, keepdim=True).clamp(min=1e-6)
            start = torch.clamp(near / length, max=1.0)  # fraction of the segment to skip
            t = start + (1 - start) * frac[None]  # M' x S, ends exactly at x
            vals = sdf(o + t[..., None] * d[:, None])
            sign = vals >= 0
            changes = (sign[:, 1:] != sign[:, :-1]).sum(1)
            out[i, s:s + per] = changes < 2
    return out
