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
                  known: torch.Tensor, pos_weight: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """All inputs P (tsdf in truncation units) -> (occupancy BCE, log-TSDF L1); zero when nothing is known."""
    if not bool(known.any()):
        z = tsdf.sum() * 0.0 + occ_logit.sum() * 0.0
        return z, z
    occ = F.binary_cross_entropy_with_logits(occ_logit[known], occ_target[known].to(occ_logit.dtype),
                                             pos_weight=torch.tensor(pos_weight, dtype=occ_logit.dtype,
                                                                     device=occ_logit.device))
    surf = known & occ_target
    if bool(surf.any()):
        l1 = (log_transform(tsdf[surf]) - log_transform(tsdf_target[surf])).abs().mean()
    else:
        l1 = tsdf.sum() * 0.0
    return occ, l1


def semantic_loss(rendered: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, ignore: int = 255) -> torch.Tensor:
    """rendered R x C probabilities, labels R int, valid R bool -> scalar (NLL + (1 - p_gt))."""
    ok = valid & (labels != ignore)
    if not bool(ok.any()):
        return rendered.sum() * 0.0
    p = rendered[ok].gather(1, labels[ok].long()[:, None])[:, 0]
    return (-torch.log(p.clamp(min=1e-6)) + (1.0 - p)).mean()
