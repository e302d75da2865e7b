"""SDF-based volume rendering of semantics and depth along camera rays.

Weights (per sample k along a ray): w_k = sigmoid(s_k / tau) * sigmoid(-s_k / tau), s = SDF in metres;
samples deeper than ``trunc`` beyond the ray's first + -> - crossing get zero weight (only the first
surface is rendered), then weights are normalised. Rays without a crossing or without any weighted
sample are invalid.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gnesf_ros.model.fields import SdfField


@dataclass
class RaySamples:
    """points R x S x 3 world metres; t R x S depth along the (unit) ray; weights R x S (normalised); valid R."""

    points: torch.Tensor
    t: torch.Tensor
    weights: torch.Tensor
    valid: torch.Tensor


def camera_rays(K: torch.Tensor, T_world_cam: torch.Tensor, pixels: torch.Tensor):
    """pixels R x 2 (u, v) -> (origins R x 3, unit directions R x 3, z-per-metre R: depth = t * z_per_m)."""
    ones = torch.ones_like(pixels[:, :1])
    cam = torch.cat([pixels, ones], 1) @ torch.linalg.inv(K).T
    norm = cam.norm(dim=1, keepdim=True)
    dirs = (cam / norm) @ T_world_cam[:3, :3].T
    return T_world_cam[:3, 3].expand_as(dirs), dirs, (1.0 / norm)[:, 0]


def sdf_weights(s: torch.Tensor, t: torch.Tensor, tau: float, trunc: float) -> tuple[torch.Tensor, torch.Tensor]:
    """s, t R x S -> (normalised weights R x S, valid R)."""
    w = torch.sigmoid(s / tau) * torch.sigmoid(-s / tau)
    cross = (s[:, :-1] > 0) & (s[:, 1:] <= 0)
    has = cross.any(1)
    first = torch.argmax(cross.to(torch.int8), 1)  # index of the last positive sample before it
    t_cross = t.gather(1, (first + 1)[:, None])
    w = w * (t <= t_cross + trunc) * has[:, None]
    total = w.sum(1, keepdim=True)
    valid = total[:, 0] > 1e-6
    return w / total.clamp(min=1e-6), valid


def march(origins: torch.Tensor, dirs: torch.Tensor, sdf: SdfField, near: float, far: float, samples: int,
          tau: float, trunc: float) -> RaySamples:
    """Uniform samples on [near, far] metres along each ray with SDF rendering weights."""
    t = torch.linspace(near, far, samples, dtype=dirs.dtype, device=dirs.device)[None].expand(dirs.shape[0], -1)
    pts = origins[:, None] + t[..., None] * dirs[:, None]
    with torch.no_grad():
        s = sdf(pts)
    w, valid = sdf_weights(s, t, tau, trunc)
    return RaySamples(pts, t, w, valid)


def composite(rays: RaySamples, values: torch.Tensor, value_valid: torch.Tensor):
    """values R x S x C at the samples (value_valid R x S) -> (rendered R x C, depth R, valid R).

    Samples without a value lose their weight and the rest is renormalised."""
    w = rays.weights * value_valid
    total = w.sum(1, keepdim=True)
    valid = rays.valid & (total[:, 0] > 1e-6)
    w = w / total.clamp(min=1e-6)
    return (w[..., None] * values).sum(1), (w * rays.t).sum(1), valid
