"""Training losses: NeuralRecon geometry losses and the rendered 2D semantic loss.

Geometry (per level): BCE on the occupancy logit (target |sdf| < band) over evaluated voxels with a
known target, plus L1 between log-transformed TSDFs (sign(t) * log(|t| + 1)) over occupied voxels.
Semantics: negative log-likelihood of the 2D label under the rendered class distribution
(+ 1 - p(gt), the official GNeSF loss), over valid rays with a label (255 = ignore).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def log_transform(t: torch.Tensor) -> torch.Tensor:
    return torch.sign(t) * torch.log(t.abs() + 1.0)


def geometry_loss(tsdf: torch.Tensor, occ_logit: torch.Tensor, tsdf_target: torch.Tensor, occ_target: torch.Tensor,
                  known: torch.Tensor, pos_weight: float = 1.5, balance_max: float = 0.0,
                  tsdf_everywhere: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """All inputs P (tsdf in truncation units) -> (occupancy BCE, log-TSDF L1); zero when nothing is known.

    pos_weight: weight of the positive (occupied) terms (NeuralRecon: 1.5). balance_max > 0 instead
    uses the class-balanced weight #negatives / #positives of these voxels, clamped to [1, balance_max]:
    near-surface voxels are a few percent of a dense coarse level, and a fixed small weight lets the
    prior "empty" win there for many steps, so pruning drops the surface before the features learn.
    tsdf_everywhere: besides the occupied voxels (NeuralRecon), the other known voxels get their own
    mean L1 term (free space reads +1, as in Atlas): kept voxels off the surface then carry a trained
    SDF, while the surface keeps its own weight (one mean over all known voxels is dominated by free
    space and learned "+1 everywhere" here)."""
    if not bool(known.any()):
        z = tsdf.sum() * 0.0 + occ_logit.sum() * 0.0
        return z, z
    target = occ_target[known]
    if balance_max > 0:
        pos = float(target.sum())
        pos_weight = min(max((target.numel() - pos) / max(pos, 1.0), 1.0), balance_max)
    occ = F.binary_cross_entropy_with_logits(occ_logit[known], target.to(occ_logit.dtype),
                                             pos_weight=torch.tensor(pos_weight, dtype=occ_logit.dtype,
                                                                     device=occ_logit.device))
    err = (log_transform(tsdf) - log_transform(tsdf_target)).abs()
    surf = known & occ_target
    l1 = err[surf].mean() if bool(surf.any()) else tsdf.sum() * 0.0
    rest = known & ~occ_target
    if tsdf_everywhere and bool(rest.any()):
        l1 = l1 + err[rest].mean() if bool(surf.any()) else err[rest].mean()
    return occ, l1


def semantic_loss(rendered: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, ignore: int = 255) -> torch.Tensor:
    """rendered R x C probabilities, labels R int, valid R bool -> scalar (NLL + (1 - p_gt))."""
    ok = valid & (labels != ignore)
    if not bool(ok.any()):
        return rendered.sum() * 0.0
    p = rendered[ok].gather(1, labels[ok].long()[:, None])[:, 0]
    return (-torch.log(p.clamp(min=1e-6)) + (1.0 - p)).mean()
