"""The segmenter protocol, input checking and the backend factory.

Every backend turns images into per-pixel class probabilities over the 20-class table
(``config/scannet20.yaml``):

    predict(images: N x H x W x 3 uint8 RGB) -> N x H x W x C float32, each pixel sums to 1

Backends that need more than pixels (the noisy oracle reads ground-truth labels, the external
adapter reads probabilities another process computed) implement ``predict_frames``;
``segment_frames`` is the one call the pipeline uses for all of them.
"""
from __future__ import annotations

import logging
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from gnesf_ros.classes import ClassTable, default_class_table
from gnesf_ros.config import ConfigError, SegmenterConfig
from gnesf_ros.errors import DataError
from gnesf_ros.paths import models_dir

if TYPE_CHECKING:
    from gnesf_ros.types import Frame

log = logging.getLogger(__name__)

BACKENDS = ("mask2former", "oracle", "external")


@runtime_checkable
class Segmenter(Protocol):
    """Anything with a class table and ``predict(images) -> probabilities``."""

    @property
    def class_table(self) -> ClassTable: ...

    @property
    def num_classes(self) -> int: ...

    def predict(self, images: np.ndarray) -> np.ndarray:
        """images N x H x W x 3 uint8 RGB -> N x H x W x C float32 probabilities (sum 1 per pixel)."""
        ...


class SegmenterBase:
    """Shared plumbing: the class table and the frame-level entry point."""

    def __init__(self, class_table: ClassTable | None = None):
        self._table = class_table or default_class_table()

    @property
    def class_table(self) -> ClassTable:
        return self._table

    @property
    def num_classes(self) -> int:
        return self._table.num_classes

    def predict(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def predict_frames(self, frames: list[Frame]) -> np.ndarray:
        """Frames -> N x H x W x C float32; the default segments ``frame.rgb``."""
        if not frames:
            raise DataError("segment_frames: no frames given")
        sizes = {f.size for f in frames}
        if len(sizes) != 1:
            raise DataError(f"segment_frames: frames differ in size {sorted(sizes)}; resize them first")
        return self.predict(np.stack([as_rgb_image(f.rgb, f"frame {f.index}") for f in frames]))


def stack_per_frame(frames: list[Frame], segment_one, pool: Executor | None = None) -> np.ndarray:
    """``segment_one(frame) -> HxWxC`` for each frame (on ``pool`` when given), stacked to
    N x H x W x C (one size for all)."""
    if not frames:
        raise DataError("segment_frames: no frames given")
    out = list(pool.map(segment_one, frames)) if pool is not None else [segment_one(f) for f in frames]
    if len({p.shape for p in out}) != 1:
        raise DataError("segment_frames: frames differ in size; resize them first")
    return np.stack(out)


def segment_frames(segmenter: Segmenter, frames: list[Frame]) -> np.ndarray:
    """Class probabilities for a list of same-sized frames: N x H x W x C float32 (sum 1 per pixel).

    The oracle reads ``frame.labels`` and ``frame.index``; the external adapter ``frame.probs``
    (or a label image there); image backends read ``frame.rgb``.
    """
    if hasattr(segmenter, "predict_frames"):
        return segmenter.predict_frames(list(frames))
    return segmenter.predict(np.stack([as_rgb_image(f.rgb, f"frame {f.index}") for f in frames]))


def as_rgb_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """One image -> H x W x 3 uint8 RGB.

    Accepted: H x W or H x W x 1 (grayscale, replicated), H x W x 3 (RGB), H x W x 4 (RGBA, alpha
    dropped); dtype uint8, or float in [0, 1] (scaled by 255). Anything else raises DataError.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise DataError(f"{what}: expected an H x W x 3 RGB image (or H x W grayscale, H x W x 4 RGBA), "
                        f"got shape {img.shape}")
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            lo, hi = (float(img.min()), float(img.max())) if img.size else (0.0, 0.0)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
                raise DataError(f"{what}: float images must lie in [0, 1], got values in [{lo:g}, {hi:g}]; "
                                "pass uint8 0..255 instead")
            img = np.round(img * 255.0).astype(np.uint8)
        else:
            raise DataError(f"{what}: unsupported dtype {img.dtype}; expected uint8 (0..255) or float in [0, 1]")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


def as_rgb_batch(images: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """A batch -> N x H x W x 3 uint8 (see ``as_rgb_image`` for what each image may be).

    ``images`` is an N x H x W x {1,3,4} array or a list of same-sized images. A bare 3-D array is
    rejected because H x W x 3 (one image) and N x H x W (grayscale batch) cannot be told apart.
    """
    if isinstance(images, (list, tuple)):
        batch = [as_rgb_image(im, f"image {i}") for i, im in enumerate(images)]
        if not batch:
            raise DataError("predict: empty image list")
        if len({b.shape for b in batch}) != 1:
            raise DataError(f"predict: images differ in size {sorted({b.shape[:2] for b in batch})}")
        return np.stack(batch)
    arr = np.asarray(images)
    if arr.ndim != 4:
        raise DataError(f"predict: expected a batch N x H x W x 3, got shape {arr.shape} "
                        "(one image: pass image[None]; grayscale batch: N x H x W x 1)")
    if arr.shape[0] == 0:
        raise DataError("predict: empty batch")
    if arr.dtype == np.uint8 and arr.shape[3] == 3:
        return np.ascontiguousarray(arr)
    return np.stack([as_rgb_image(im, f"image {i}") for i, im in enumerate(arr)])


def normalize_probs(scores: np.ndarray, axis: int = -1, eps: float = 1e-8) -> np.ndarray:
    """Non-negative scores -> probabilities along ``axis``; all-zero pixels become uniform."""
    scores = np.clip(np.asarray(scores, np.float32), 0.0, None)
    total = scores.sum(axis=axis, keepdims=True)
    uniform = np.float32(1.0 / scores.shape[axis])
    return np.where(total > eps, scores / np.maximum(total, eps), uniform).astype(np.float32)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint path as given, or relative to the package data root (``models/...``)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    try:
        root = models_dir().parent
    except FileNotFoundError:
        return p
    return root / p if (root / p).exists() else p


def build_segmenter(cfg: SegmenterConfig | None = None, class_table: ClassTable | None = None):
    """The backend ``cfg.backend`` names: ``mask2former`` | ``oracle`` | ``external``."""
    cfg = cfg or SegmenterConfig()
    table = class_table or default_class_table()
    if cfg.backend == "mask2former":
        from gnesf_ros.segmentation.mask2former import Mask2FormerSegmenter

        return Mask2FormerSegmenter(
            resolve_checkpoint(cfg.checkpoint), remap=cfg.remap or None,
            input_size=(cfg.input_height, cfg.input_width), batch_size=cfg.batch_size,
            threads=cfg.threads, device=cfg.device, class_table=table)
    if cfg.backend == "oracle":
        from gnesf_ros.segmentation.oracle import NoisyOracleSegmenter

        return NoisyOracleSegmenter(target_miou=cfg.oracle_miou, seed=cfg.oracle_seed,
                                    temperature=cfg.oracle_temperature, class_table=table, threads=cfg.threads)
    if cfg.backend == "external":
        from gnesf_ros.segmentation.external import ExternalSegmenter

        return ExternalSegmenter(label_confidence=cfg.external_label_confidence, class_table=table)
    raise ConfigError(f"segmenter.backend '{cfg.backend}' is unknown (choose one of: {', '.join(BACKENDS)})")


__all__ = ["Segmenter", "SegmenterBase", "build_segmenter", "segment_frames", "as_rgb_batch",
           "as_rgb_image", "normalize_probs", "resolve_checkpoint"]
