"""External segmenter adapter: probabilities or label images computed by another process.

The producer (e.g. a segmentation node publishing ``segmentation/probabilities``) fills
``Frame.probs`` with either

- H x W x C float probabilities over the 20 classes (scores >= 0 are renormalised per pixel), or
- an H x W (or H x W x 1) integer label image of class indices (255 / >= C = unknown), turned into
  soft probabilities: ``label_confidence`` on the label, the rest spread evenly; unknown -> uniform.

Inputs at another resolution than the frame's image are resized (same aspect ratio required).
"""
from __future__ import annotations

import cv2
import numpy as np

from gnesf_ros.classes import ClassTable
from gnesf_ros.errors import DataError, ModelError
from gnesf_ros.segmentation.base import SegmenterBase, normalize_probs, stack_per_frame


def probs_from_labels(labels: np.ndarray, num_classes: int, confidence: float = 0.9) -> np.ndarray:
    """Label image H x W (class index; >= C or < 0 = unknown) -> H x W x C float32 soft probabilities."""
    lab = np.asarray(labels)
    if lab.ndim == 3 and lab.shape[2] == 1:
        lab = lab[:, :, 0]
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"external label image must be H x W integers, got {lab.dtype} {lab.shape}")
    if not 1.0 / num_classes <= confidence <= 1.0:
        raise DataError(f"label confidence must be in [1/C, 1], got {confidence}")
    lab = lab.astype(np.int64)
    known = (lab >= 0) & (lab < num_classes)
    other = (1.0 - confidence) / (num_classes - 1)
    probs = np.full(lab.shape + (num_classes,), other, np.float32)
    rows = np.nonzero(known.reshape(-1))[0]
    probs.reshape(-1, num_classes)[rows, lab.reshape(-1)[rows]] = confidence
    probs[~known] = 1.0 / num_classes
    return probs


def check_probs(probs: np.ndarray, num_classes: int) -> np.ndarray:
    """H x W x C non-negative finite scores -> float32 probabilities (sum 1 per pixel); else DataError."""
    p = np.asarray(probs)
    if p.ndim != 3 or p.shape[2] != num_classes:
        raise DataError(f"external probabilities must be H x W x {num_classes}, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):
        raise DataError(f"external probabilities must be float, got {p.dtype} (label images: H x W integers)")
    if not np.isfinite(p).all():
        raise DataError("external probabilities contain NaN or inf")
    if (p < 0).any():
        raise DataError("external probabilities are negative somewhere: send softmax probabilities, not logits")
    return normalize_probs(p)


def _resize_to(arr: np.ndarray, size: tuple[int, int], nearest: bool, what: str) -> np.ndarray:
    h, w = arr.shape[:2]
    if (h, w) == tuple(size):
        return arr
    if abs(h / w - size[0] / size[1]) > 0.01:
        raise DataError(f"{what} is {w}x{h} but the image is {size[1]}x{size[0]}: aspect ratios differ")
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    if arr.ndim == 3 and arr.shape[2] > 4:  # resize channel by channel: cv2 caps channel counts
        return np.stack([cv2.resize(arr[..., k], (size[1], size[0]), interpolation=interp)
                         for k in range(arr.shape[2])], -1)
    return cv2.resize(arr, (size[1], size[0]), interpolation=interp)


class ExternalSegmenter(SegmenterBase):
    """Reads ``frame.probs`` (probabilities or a label image) supplied by another process."""

    def __init__(self, label_confidence: float = 0.9, class_table: ClassTable | None = None):
        super().__init__(class_table)
        if not 1.0 / self.num_classes <= label_confidence <= 1.0:
            raise ModelError(f"external_label_confidence must be in [1/C, 1], got {label_confidence}")
        self.label_confidence = float(label_confidence)

    def predict(self, images: np.ndarray) -> np.ndarray:
        raise ModelError("the external segmenter has no model: its probabilities arrive with the frames "
                         "(frame.probs); call segment_frames(segmenter, frames)")

    def convert(self, data: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """Probabilities (H x W x C float) or a label image (H x W int) -> H x W x C float32 at ``size``."""
        arr = np.asarray(data)
        is_labels = np.issubdtype(arr.dtype, np.integer) and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1))
        if is_labels:
            arr = arr.reshape(arr.shape[:2])
            if size is not None:
                arr = _resize_to(arr.astype(np.int32), size, True, "external label image")
            return probs_from_labels(arr, self.num_classes, self.label_confidence)
        probs = check_probs(arr, self.num_classes)
        if size is not None:
            probs = normalize_probs(_resize_to(probs, size, False, "external probabilities"))
        return probs

    def predict_frames(self, frames) -> np.ndarray:
        def one(f):
            if f.probs is None:
                raise DataError(f"external segmenter: frame {f.index} (stamp {f.stamp:.3f}) has no probabilities; "
                                "the segmentation producer must fill frame.probs")
            return self.convert(f.probs, f.size)

        return stack_per_frame(frames, one)
