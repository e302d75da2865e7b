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


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert train_main(["segmenter", "--out", str(tmp_path / "none"), "--resume", "--steps", "5"]) == 2
    assert "no training state" in capsys.readouterr().err
    assert train_main(["segmenter", "--steps", "0"]) == 2
    with pytest.raises(SystemExit):
        train_main(["segmenter", "--size", "240"])
    with pytest.raises(SystemExit):
        train_main([])
    assert size_arg(32)("320x240") == (240, 320)
