"""Soft semantic voting over source views (GNeSF section 3.3) and its ablation variants.

Per voxel x and view i: view feature f_i = [F_i(x), RGB_i(x), S_i(x)]; F'_i = MLP([f_i, mean_j f_j,
var_j f_j]); score v_i = f_v([F'_i, M(x), unit(x - o_i), depth_i / max_depth]); views that do not see
x (outside the image, < min depth, or occluded when visibility is on) are masked; softmax over views.
  prob:  s(x) = sum_i softmax_i(v) * S_i(x)                      (default, with visibility: prob_vis)
  logit: s(x) = softmax_c(sum_i softmax_i(v) * log S_i(x))
  direct: s(x) = softmax_c(MLP(M(x)))                             (no 2D probabilities; ablation)
  mean:  s(x) = mean of S_i(x) over the views that see x, occlusion as prob_vis (no network; reference)
Shapes: N views, M voxels, C classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gnesf_ros.model.volume import mean_var

VARIANTS = ("direct", "logit", "prob", "prob_vis")  # the trained heads
MEAN = "mean"  # untrained reference variant: uniform votes
_EPS = 1e-6


def _mlp(*sizes: int) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers[:-1])


class VoteScorer(nn.Module):
    """Per-view voting scores. forward(view_in N x M x Cv, valid N x M, geo M x Cg, dirs N x M x 3,
    depth_rel N x M) -> scores N x M (-inf where not valid)."""

    def __init__(self, view_channels: int, geo_channels: int, hidden: int = 32, out: int = 16):
        super().__init__()
        self.fuse = _mlp(3 * view_channels, hidden, out)
        self.score = _mlp(out + geo_channels + 4, 16, 8, 1)
        # near-zero scores at the start: the votes begin as the plain mean of the views (the `mean`
        # variant) and training learns departures from it (small, not zero: every layer gets gradients)
        nn.init.normal_(self.score[-1].weight, std=1e-3)
        nn.init.zeros_(self.score[-1].bias)

    def forward(self, view_in, valid, geo, dirs, depth_rel):
        n, m, c = view_in.shape
        mean, var, _ = mean_var(view_in, valid, min_views=1)
        # The first layers of both MLPs are split by input block: the per-voxel blocks (mean, var,
        # geo) are multiplied once per voxel, not once per (view, voxel) pair, and only the pairs
        # where the view sees the voxel are scored. Same function as the concatenated layers.
        pair = torch.nonzero(valid.reshape(-1))[:, 0]
        vox = pair % m
        fuse0, score0 = self.fuse[0], self.score[0]
        wv, wm, ws = fuse0.weight.split([c, c, c], 1)
        per_voxel = F.linear(torch.cat([mean, var], 1), torch.cat([wm, ws], 1), fuse0.bias)  # M x hidden
        h = F.linear(view_in.reshape(n * m, c)[pair], wv) + per_voxel[vox]
        f = torch.relu(self.fuse[1:](h))  # fuse[1:] starts with the ReLU of the split layer
        o = f.shape[1]
        wf, wg, wd = score0.weight.split([o, geo.shape[1], 4], 1)
        geo_term = F.linear(geo, wg, score0.bias)  # M x 16
        extra = torch.cat([dirs.reshape(n * m, 3)[pair], depth_rel.reshape(n * m, 1)[pair]], 1)
        h = F.linear(f, wf) + geo_term[vox] + F.linear(extra, wd)
        v = self.score[1:](h)[:, 0]
        return view_in.new_full((n * m,), float("-inf")).index_copy_(0, pair, v).view(n, m)


def combine(scores: torch.Tensor, probs: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scores N x M (-inf = masked), probs N x M x C -> (class_probs M x C, sem_weight M in {0, 1}).

    Voxels without any valid view get uniform probabilities and weight 0."""
    valid = torch.isfinite(scores)
    any_view = valid.any(0)
    w = torch.softmax(scores.masked_fill(~any_view[None], 0.0), 0) * valid  # N x M
    if mode == "logit":
        logits = (w[..., None] * torch.log(probs.clamp(min=_EPS))).sum(0)
        out = torch.softmax(logits, 1)
    elif mode in ("prob", "prob_vis"):
        out = (w[..., None] * probs).sum(0)
        out = out / out.sum(1, keepdim=True).clamp(min=_EPS)
    else:
        raise ValueError(f"unknown voting mode '{mode}' (expected logit | prob | prob_vis)")
    c = probs.shape[2]
    out = torch.where(any_view[:, None], out, torch.full_like(out, 1.0 / c))
    return out, any_view.to(out.dtype)


def mean_vote(probs: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``mean`` variant: uniform votes over the valid views. probs N x M x C, valid N x M -> as ``combine``."""
    return combine(torch.zeros(valid.shape, dtype=probs.dtype, device=probs.device).masked_fill(~valid, float("-inf")),
                   probs, "prob")
