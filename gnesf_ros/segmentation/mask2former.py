"""Mask2Former backend: any ``Mask2FormerForUniversalSegmentation`` checkpoint from a local directory.

Loading is offline (``local_files_only``; nothing is fetched from the hub). Probabilities follow
Mask2Former's semantic inference: per query, class softmax without the no-object class times the
sigmoid of the mask logits (upsampled to the input image size), summed over queries, mapped to the
20 classes through the label remap and normalised per pixel.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from gnesf_ros.classes import ClassTable
from gnesf_ros.errors import ModelError
from gnesf_ros.segmentation.base import SegmenterBase, as_rgb_batch
from gnesf_ros.segmentation.remap import LabelRemap, build_remap

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
EXPECTED_FILES = ("config.json", " or ".join(WEIGHT_FILES), "preprocessor_config.json")


def check_checkpoint_dir(path: str | Path) -> Path:
    """Raise one ModelError naming every missing file of a Mask2Former checkpoint directory."""
    p = Path(path)
    expected = ", ".join(EXPECTED_FILES)
    if not p.is_dir():
        raise ModelError(f"Mask2Former checkpoint directory not found: {p} (it must contain {expected})")
    present = {name: (p / name).is_file() for name in ("config.json", "preprocessor_config.json")}
    present[EXPECTED_FILES[1]] = any((p / w).is_file() for w in WEIGHT_FILES)
    missing = [name for name in EXPECTED_FILES if not present[name]]
    if missing:
        raise ModelError(f"Mask2Former checkpoint {p} is incomplete: missing {', '.join(missing)} "
                         f"(expected {expected})")
    return p


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch CPU threads (n <= 0: leave as is); restores the previous count."""
    import torch

    before = torch.get_num_threads()
    if n > 0 and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class Mask2FormerSegmenter(SegmenterBase):
    """Mask2Former semantic probabilities over the 20 classes.

    checkpoint: directory with config.json, model.safetensors (or pytorch_model.bin) and
    preprocessor_config.json, as written by ``save_pretrained``. remap: label remap YAML, or None
    to infer it from the checkpoint's id2label. input_size: (height, width) the network sees
    (the image processor rounds it up to a multiple of 32); outputs come back at each image's size.
    """

    def __init__(self, checkpoint: str | Path, remap: str | Path | None = None,
                 input_size: tuple[int, int] = (240, 320), batch_size: int = 4, threads: int = 2,
                 device: str = "cpu", class_table: ClassTable | None = None):
        super().__init__(class_table)
        self.checkpoint = check_checkpoint_dir(checkpoint)
        if batch_size < 1 or min(input_size) < 32:
            raise ModelError(f"Mask2Former: batch_size must be >= 1 and input size >= 32 px, "
                             f"got {batch_size} and {input_size}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.batch_size = int(batch_size)
        self.threads = int(threads)
        self.device = device
        self.model, self.processor, self.remap = self._load(remap)
        import torch

        self._label_to_class = torch.from_numpy(self.remap.matrix(self.num_classes)).to(device)

    def _load(self, remap_path):
        import torch
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation
        from transformers.models.mask2former.image_processing_pil_mask2former import (
            Mask2FormerImageProcessorPil,
        )
        from transformers.utils import logging as hf_logging

        from gnesf_ros.segmentation.lite_backbone import LiteBackboneConfig  # registers the backbone type

        ckpt = self.checkpoint
        try:
            config = Mask2FormerConfig.from_pretrained(ckpt, local_files_only=True)
        except Exception as e:  # transformers raises several types for a bad config
            raise ModelError(f"Mask2Former checkpoint {ckpt}: config.json is not a Mask2Former config ({e})") from None
        remap: LabelRemap = build_remap(config.id2label, self.class_table, remap_path)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in node logs
        try:
            model = Mask2FormerForUniversalSegmentation.from_pretrained(ckpt, local_files_only=True)
            processor = Mask2FormerImageProcessorPil.from_pretrained(ckpt, local_files_only=True)
        except ModelError:
            raise  # e.g. the backbone's code package is missing: already one line naming it
        except Exception as e:
            weights = next(ckpt / w for w in WEIGHT_FILES if (ckpt / w).is_file())
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"Mask2Former checkpoint {ckpt} could not be loaded: {first} (is {weights} "
                             "corrupt or truncated, or written by another architecture?)") from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        backbone = model.model.pixel_level_module.encoder
        if backbone.config.model_type == LiteBackboneConfig.model_type:  # inference only: fold its batch norms
            from gnesf_ros.model.backbone import fuse_conv_bn_

            fuse_conv_bn_(backbone.eval())
        try:
            model = model.to(torch.device(self.device)).eval()
        except (RuntimeError, AssertionError) as e:
            raise ModelError(f"Mask2Former: device '{self.device}' is not usable here: {e}") from None
        log.info("Mask2Former %s: %d labels (%s), %d queries, %.2f M parameters, input %dx%d",
                 ckpt, remap.num_labels, remap.origin, config.num_queries,
                 sum(p.numel() for p in model.parameters()) / 1e6, *self.input_size)
        return model, processor, remap

    def predict(self, images: np.ndarray) -> np.ndarray:
        """images N x H x W x 3 uint8 RGB -> N x H x W x C float32 probabilities (sum 1 per pixel)."""
        import torch

        batch = as_rgb_batch(images)
        out = np.empty(batch.shape[:3] + (self.num_classes,), np.float32)
        h, w = self.input_size
        with torch_threads(self.threads), torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                chunk = batch[start:start + self.batch_size]
                inputs = self.processor(images=list(chunk), size={"height": h, "width": w}, return_tensors="pt")
                result = self.model(pixel_values=inputs["pixel_values"].to(self.device))
                probs = self.semantic_probs(result.class_queries_logits, result.masks_queries_logits,
                                            chunk.shape[1:3])
                out[start:start + len(chunk)] = probs.cpu().numpy()
        return out

    def semantic_probs(self, class_logits, mask_logits, size: tuple[int, int]):
        """Mask2Former semantic inference, remapped: N x H x W x C torch float32 (sum 1 per pixel).

        class_logits N x Q x (K+1) (last = no object); mask_logits N x Q x h x w over the whole image.
        """
        import torch
        import torch.nn.functional as F

        class_probs = class_logits.float().softmax(-1)[..., :-1] @ self._label_to_class  # N x Q x C
        out = []
        for i in range(class_logits.shape[0]):  # one image at a time bounds memory (Q x H x W)
            masks = F.interpolate(mask_logits[i:i + 1].float(), size=tuple(size), mode="bilinear",
                                  align_corners=False)[0].sigmoid()
            scores = torch.einsum("qc,qhw->hwc", class_probs[i], masks)
            total = scores.sum(-1, keepdim=True)
            uniform = torch.full_like(scores, 1.0 / scores.shape[-1])
            out.append(torch.where(total > 1e-8, scores / total.clamp_min(1e-8), uniform))
        return torch.stack(out)
