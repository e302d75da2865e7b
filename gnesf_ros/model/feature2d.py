"""2D feature network: a small conv encoder + FPN decoder (NeuralRecon-style multi-scale features).

forward(images N x 3 x H x W float in [0, 1]) -> [F_s16 N x C0 x H/16 x W/16, F_s8 N x C1 x H/8 x W/8,
F_s4 N x C2 x H/4 x W/4]: one map per 3D level, coarse to fine (16 cm, 8 cm, 4 cm by default).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class FeatureFPN(nn.Module):
    """Encoder 3 -> enc[0] (s2) -> enc[1] (s4) -> enc[2] (s8) -> enc[3] (s16); FPN outputs ``out_channels``."""

    def __init__(self, enc_channels=(16, 24, 32, 48), out_channels=(32, 24, 16)):
        super().__init__()
        e = enc_channels
        self.stem = _conv_bn(3, e[0], 2)
        self.down = nn.ModuleList([nn.Sequential(_conv_bn(e[i], e[i + 1], 2), _conv_bn(e[i + 1], e[i + 1]))
                                   for i in range(3)])
        inner = out_channels[0]
        self.lateral = nn.ModuleList([nn.Conv2d(e[3], inner, 1), nn.Conv2d(e[2], inner, 1), nn.Conv2d(e[1], inner, 1)])
        self.out = nn.ModuleList([nn.Conv2d(inner, c, 3, 1, 1) for c in out_channels])
        self.out_channels = tuple(out_channels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images - 0.5)
        feats = []
        for layer in self.down:
            x = layer(x)
            feats.append(x)  # s4, s8, s16
        top = self.lateral[0](feats[2])
        outs = [self.out[0](top)]
        for lat, out, skip in zip(self.lateral[1:], self.out[1:], (feats[1], feats[0])):
            top = F.interpolate(top, size=skip.shape[-2:], mode="nearest") + lat(skip)
            outs.append(out(top))
        return outs
