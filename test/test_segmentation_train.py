"""Segmenter training on synthetic views: a few steps, a checkpoint that loads, resume, CLI errors."""
import json

import numpy as np
import pytest
import torch

from gnesf_ros.cli.train import main as train_main
from gnesf_ros.cli.common import size_arg
from gnesf_ros.segmentation.mask2former import Mask2FormerSegmenter
from gnesf_ros.segmentation.train import STATE_FILE, SegmenterTrainConfig, train_segmenter

torch.set_num_threads(1)


def test_train_resume_and_load(tmp_path):
    cfg = SegmenterTrainConfig(out=str(tmp_path / "seg"), steps=2, size=(64, 96), batch_size=2, save_every=1,
                               scene_pool=1, views_per_scene=3, eval_scenes=0)
    first = train_segmenter(cfg, progress=False)
    assert first["steps"] == 2 and np.isfinite(first["final_loss"])
    assert torch.load(tmp_path / "seg" / STATE_FILE, weights_only=False)["step"] == 2
    cfg.steps = 3
    second = train_segmenter(cfg, resume=True, progress=False)
    assert torch.load(tmp_path / "seg" / STATE_FILE, weights_only=False)["step"] == 3
    assert set(first["train_seeds_used"]) <= set(second["train_seeds_used"])
    assert json.loads((tmp_path / "seg" / "train_log.json").read_text())["steps"] == 3
    assert (tmp_path / "seg" / "MODEL_CARD.md").read_text().startswith("# Small Mask2Former")
    seg = Mask2FormerSegmenter(tmp_path / "seg", input_size=(64, 96), threads=1)
    probs = seg.predict(np.zeros((1, 48, 64, 3), np.uint8))
    assert probs.shape == (1, 48, 64, 20)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    done = train_segmenter(cfg, resume=True, progress=False)  # already complete: no step, no error
    assert done["steps"] == 3 and done["final_loss"] is None
    assert torch.load(tmp_path / "seg" / STATE_FILE, weights_only=False)["step"] == 3


def test_init_from_starts_a_new_run_from_the_weights(tmp_path):
    first = SegmenterTrainConfig(out=str(tmp_path / "a"), steps=1, size=(64, 96), batch_size=2, scene_pool=1,
                                 views_per_scene=2, eval_scenes=0)
    train_segmenter(first, progress=False)
    cfg = SegmenterTrainConfig(out=str(tmp_path / "b"), steps=1, size=(64, 96), batch_size=2, scene_pool=1,
                               views_per_scene=2, eval_scenes=0, init_from=str(tmp_path / "a"))
    train_segmenter(cfg, progress=False)
    assert torch.load(tmp_path / "b" / STATE_FILE, weights_only=False)["step"] == 1  # a new run, step 0 -> 1
    assert "initialised from the weights in" in (tmp_path / "b" / "MODEL_CARD.md").read_text()
    from gnesf_ros.classes import ClassTable, default_class_table
    from gnesf_ros.errors import ModelError

    full = default_class_table()
    other = ClassTable(names=full.names[:2], nyu40_ids=full.nyu40_ids[:2], colors=full.colors[:2])
    with pytest.raises(ModelError, match="not the class table"):
        train_segmenter(cfg, table=other, progress=False)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert train_main(["segmenter", "--out", str(tmp_path / "none"), "--resume", "--steps", "5"]) == 2
    assert "no training state" in capsys.readouterr().err
    assert train_main(["segmenter", "--steps", "0"]) == 2
    assert train_main(["segmenter", "--loader-threads", "0"]) == 2
    assert train_main(["segmenter", "--scale-jitter", "1"]) == 2
    assert "--scale-jitter must be in [0, 1)" in capsys.readouterr().err
    assert train_main(["segmenter", "--resume", "--init-from", "models/segmenter"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["segmenter", "--size", "240"])
    with pytest.raises(SystemExit):
        train_main([])
    assert size_arg(32)("320x240") == (240, 320)


def test_views_folder_matches_the_renderer_and_trains(tmp_path):
    from gnesf_ros.classes import default_class_table
    from gnesf_ros.segmentation.train import export_views, render_views

    size, table = (64, 96), default_class_table()
    meta = export_views(tmp_path / "views", [3, 4], 2, size, table, progress=False)
    assert meta["views"] == len(list((tmp_path / "views").glob("*.jpg"))) == len(list((tmp_path / "views").glob("*.png")))
    cfg = SegmenterTrainConfig(out=str(tmp_path / "seg"), steps=2, size=size, batch_size=2, eval_scenes=0,
                               views_dir=str(tmp_path / "views"), scale_jitter=0.0)
    from gnesf_ros.segmentation.train import FolderViews

    folder = FolderViews(cfg, table, np.random.default_rng(0))
    rendered = [v for s in (3, 4) for v in render_views(s, 2, size, table)]
    stored = [v for scene in folder.scenes for v in scene]
    assert folder.seeds_used == [3, 4] and len(stored) == len(rendered) == meta["views"]
    for (rgb, labels), view in zip(stored, rendered):
        np.testing.assert_array_equal(labels, view.labels)  # labels lossless
        assert np.abs(rgb.astype(int) - view.rgb).mean() < 4.0  # JPEG q95, RGB order kept
    summary = train_segmenter(cfg, progress=False)
    assert summary["train_seeds_used"] == [3, 4] and np.isfinite(summary["final_loss"])
    assert "segmenter-views --out DIR --first-seed 3 --scenes 2 --views 2" in (tmp_path / "seg" / "MODEL_CARD.md").read_text()


def test_views_folder_errors_name_the_problem(tmp_path, capsys):
    from gnesf_ros.segmentation.train import export_views

    export_views(tmp_path / "views", [3], 1, (64, 96), progress=False)
    assert train_main(["segmenter", "--views", str(tmp_path / "views"), "--size", "320x240", "--out",
                       str(tmp_path / "seg"), "--steps", "1"]) == 2
    assert "views are 96x64, training size is 320x240" in capsys.readouterr().err
    assert train_main(["segmenter", "--views", str(tmp_path / "none"), "--out", str(tmp_path / "seg"), "--steps", "1"]) == 2
    assert "not a views folder" in capsys.readouterr().err
    assert train_main(["segmenter-views", "--out", str(tmp_path / "v2"), "--scenes", "0"]) == 2


def test_augment_keeps_size_and_labels():
    from gnesf_ros.segmentation.train import augment

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(12, dtype=np.uint8)[None].repeat(8, 1), 40, 0)  # 40 x 96, columns of classes
    rgb = np.dstack([labels * 20] * 3).astype(np.uint8)
    for _ in range(20):
        out_rgb, out_labels = augment(rgb, labels, rng, 0.5)
        assert out_rgb.shape == rgb.shape and out_labels.shape == labels.shape
        assert set(np.unique(out_labels)) <= set(range(12))  # nearest resampling: no blended classes
        assert (np.diff(out_labels.astype(int), axis=0) == 0).all()  # a crop, not a rotation
    flat = np.full((40, 96), 7, np.uint8)
    assert (augment(rgb, flat, rng, 0.5)[1] == 7).all()


def test_max_minutes_only_shortens_the_run():
    from gnesf_ros.segmentation.train import _fit_steps_to_time

    cfg = SegmenterTrainConfig(steps=10_000, max_minutes=1.0)
    _fit_steps_to_time(cfg, step=100, per_step=0.1, elapsed_s=10.0)
    assert cfg.steps == 100 + 500  # 50 s left at 0.1 s a step
    cfg = SegmenterTrainConfig(steps=300, max_minutes=1.0)
    _fit_steps_to_time(cfg, step=100, per_step=0.1, elapsed_s=10.0)
    assert cfg.steps == 300


def test_camera_effects_vary_the_image_but_keep_its_content():
    from gnesf_ros.segmentation.train import camera_effects

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:48, 0:64]
    img = np.dstack([(xx * 4) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256]).astype(np.uint8)
    outs = [camera_effects(img, rng) for _ in range(30)]
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)
    means = np.array([o.reshape(-1, 3).mean(0) for o in outs])
    assert np.ptp(means.mean(1)) > 20  # exposure varies
    assert np.ptp(means[:, 0] - means[:, 1]) > 5  # white balance varies
    # still the same picture: each output correlates with the input
    for o in outs:
        assert np.corrcoef(o[..., 0].ravel().astype(float), img[..., 0].ravel().astype(float))[0, 1] > 0.7
    again = camera_effects(img, np.random.default_rng(3))
    assert np.array_equal(again, outs[0])  # seeded


def test_lite_backbone_training_keeps_frozen_parts(tmp_path):
    from gnesf_ros.segmentation.train import new_model

    from gnesf_ros.classes import default_class_table

    model = new_model("efficientnet_lite0", default_class_table().names)
    net = model.model.pixel_level_module.encoder.net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = SegmenterTrainConfig(out=str(tmp_path / "lite"), steps=2, size=(64, 96), batch_size=2, scene_pool=1,
                               views_per_scene=2, eval_scenes=0, lr=1e-2)
    train_segmenter(cfg, progress=False)
    from transformers import Mask2FormerForUniversalSegmentation

    trained = Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "lite").model.pixel_level_module.encoder.net
    after = trained.state_dict()
    assert torch.equal(after["_conv_stem.weight"], before["_conv_stem.weight"])  # frozen stem
    assert torch.equal(after["_blocks.2._project_conv.weight"], before["_blocks.2._project_conv.weight"])  # stage1
    assert all(torch.equal(after[k], before[k]) for k in before if "running_" in k)  # BN statistics kept
    assert not torch.equal(after["_blocks.10._project_conv.weight"], before["_blocks.10._project_conv.weight"])
    assert "ImageNet EfficientNet-Lite0" in (tmp_path / "lite" / "MODEL_CARD.md").read_text()
