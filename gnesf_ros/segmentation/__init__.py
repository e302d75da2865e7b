"""2D segmentation: per-view class probabilities (N x H x W x C float32) over the 20 classes.

Backends (``SegmenterConfig.backend``): ``mask2former`` (a local Mask2Former checkpoint, default:
the small model shipped in models/segmenter), ``oracle`` (noisy ground truth, calibrated 2D mIoU),
``external`` (probabilities or label images from another process, in ``Frame.probs``).
"""
from gnesf_ros.segmentation.base import Segmenter, SegmenterBase, build_segmenter, segment_frames

__all__ = ["Segmenter", "SegmenterBase", "build_segmenter", "segment_frames"]
