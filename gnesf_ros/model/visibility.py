"""Visibility of voxels from source cameras by walking the predicted SDF along the camera ray.

For view i and point x the segment from ``near`` metres in front of the camera centre o_i to x
itself is sampled (so points closer than 1 m work, unlike a fixed 1 m start). Counting sign changes
of the SDF along it: 0 (free up to x) or 1 (+ -> -: x lies on the first surface) = visible;
>= 2 (+ -> - -> + ...: another surface lies in front of x) = occluded.
Where views carry measured depth (rgbd mode) ``visible_in_depth`` is the cheap alternative: a z-test.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gnesf_ros.model.fields import SdfField
from gnesf_ros.model.volume import image_grid


def visible_from(cam_centres: torch.Tensor, points: torch.Tensor, sdf: SdfField, samples: int = 32,
                 near: float = 0.05, chunk: int = 1 << 20, pairs: torch.Tensor | None = None) -> torch.Tensor:
    """cam_centres N x 3, points M x 3 (world metres) -> N x M bool (True = x is visible from view i).

    pairs (N x M bool, optional): walk only these (view, point) pairs, e.g. those inside the view's
    image; the others are reported visible (the caller masks them anyway)."""
    n, m = cam_centres.shape[0], points.shape[0]
    out = torch.ones(n * m, dtype=torch.bool, device=points.device)
    if m == 0:
        return out.view(n, m)
    todo = torch.nonzero(pairs.reshape(-1))[:, 0] if pairs is not None else torch.arange(n * m, device=points.device)
    frac = torch.linspace(0.0, 1.0, samples, device=points.device, dtype=points.dtype)
    per = max(1, chunk // samples)
    for s in range(0, todo.numel(), per):
        pair = todo[s:s + per]
        o, x = cam_centres[pair // m], points[pair % m]
        d = x - o
        length = d.norm(dim=1, keepdim=True).clamp(min=1e-6)
        start = torch.clamp(near / length, max=1.0)  # fraction of the segment to skip
        t = start + (1 - start) * frac[None]  # P x S, ends exactly at x
        vals = sdf(o[:, None] + t[..., None] * d[:, None])
        sign = vals >= 0
        changes = (sign[:, 1:] != sign[:, :-1]).sum(1)
        out[pair] = changes < 2
    return out.view(n, m)


def visible_in_depth(depth: torch.Tensor, uv: torch.Tensor, z: torch.Tensor, size: tuple[int, int],
                     tol: float) -> torch.Tensor:
    """Z-test against measured depth: x is occluded in view i when it lies more than ``tol`` metres
    behind the depth at its projection. depth N x 1 x H x W metres (0 = no measurement: unknown never
    occludes), uv N x M x 2 pixels at size (H, W), z N x M metres -> N x M bool. Nearest-pixel
    look-up: interpolating across a depth edge would invent surfaces."""
    d = F.grid_sample(depth, image_grid(uv, size)[:, None], mode="nearest", padding_mode="border",
                      align_corners=False)[:, 0, 0]
    return (d <= 0) | (z <= d + tol)
