"""Per-voxel prediction heads: TSDF + occupancy (geometry) and the direct class head (ablation).

GeometryHead: features M x C -> (tsdf M in units of the level's truncation, occupancy logit M); the TSDF
is the raw linear output while training (NeuralRecon: a tanh here saturated at +1 and stopped learning)
and clamped to [-1, 1] in eval mode.
DirectHead: geometry encoding M x C -> class logits M x num_classes (the paper's "direct" baseline).
"""
from __future__ import annotations

import torch
from torch import nn


class GeometryHead(nn.Module):
    """Single linear layers as in NeuralRecon: TSDF (truncation units, clamped in eval) and occupancy logit."""

    def __init__(self, channels: int):
        super().__init__()
        self.tsdf = nn.Linear(channels, 1)
        self.occ = nn.Linear(channels, 1)
        # start with a low occupancy prior (p ~ 0.12): an untrained net prunes nearly everything
        # instead of keeping half the volume, which bounds the cost of the first training steps
        nn.init.constant_(self.occ.bias, -2.0)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tsdf = self.tsdf(feats)[:, 0]
        return (tsdf if self.training else tsdf.clamp(-1.0, 1.0)), self.occ(feats)[:, 0]


class DirectHead(nn.Module):
    """MLP on M(x) predicting class logits directly (no use of the 2D probabilities)."""

    def __init__(self, channels: int, num_classes: int, hidden: int = 32):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, geo_feats: torch.Tensor) -> torch.Tensor:
        return self.mlp(geo_feats)
