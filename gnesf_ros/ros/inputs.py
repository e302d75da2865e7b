"""Input messages -> core ``Frame``, with every rejection named by a drop reason.

The node counts each ``InputRejected.reason`` in /diagnostics (``drops_<reason>``). Images are
checked before decoding (encoding, size, data length) so a malformed message costs almost nothing;
accepted images are resized to the processing size ``mapper.camera`` (intrinsics scaled with them).
"""
from __future__ import annotations

import cv2
import numpy as np

from gnesf_ros.config import CameraConfig
from gnesf_ros.errors import GnesfError
from gnesf_ros.geometry.camera import CameraModelError, scale_intrinsics, validate_camera
from gnesf_ros.ros import conversions as conv
from gnesf_ros.ros.sync import SyncedInput
from gnesf_ros.types import Frame

# Every reason the node may count (reported as 0 until seen, so monitors know the keys).
DROP_REASONS = (
    "unsupported_encoding", "empty_image", "data_size_mismatch", "image_too_large",
    "camera_info_mismatch", "bad_camera_info", "depth_size_mismatch", "bad_segmentation",
    "no_camera_info", "no_depth", "no_segmentation", "sync_overflow", "queue_full", "keyframe_queue_full",
    "no_transform", "invalid_pose", "tf_rejected", "bad_pose",
    "duplicate_stamp", "out_of_order", "time_backwards", "internal_error",
)
SEGMENTATION_ENCODINGS = ("mono8", "8UC1", "16UC1", "mono16")  # class-index images; or 32FC<C>


class InputRejected(GnesfError):
    """An input that cannot be mapped; ``reason`` is the diagnostics key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def check_image(msg, encodings: tuple[str, ...] | None, what: str, max_pixels: int | None = None) -> None:
    """Cheap structural checks before decoding; raises InputRejected."""
    if encodings is not None and msg.encoding not in encodings:
        raise InputRejected("unsupported_encoding", f"{what} encoding '{msg.encoding}' not supported "
                                                    f"(use one of {', '.join(encodings)})")
    try:
        conv.encoding_info(msg.encoding)
    except GnesfError as e:
        raise InputRejected("unsupported_encoding", f"{what}: {e}") from None
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise InputRejected("empty_image", f"{what} is empty ({w}x{h})")
    if max_pixels is not None and h * w > max_pixels:
        raise InputRejected("image_too_large", f"{what} has {w}x{h} pixels, more than max_image_pixels = {max_pixels}")
    if len(msg.data) != h * step:
        raise InputRejected("data_size_mismatch", f"{what} data has {len(msg.data)} bytes, expected "
                                                  f"height x step = {h} x {step} = {h * step}")


def _decode(fn, msg, what: str):
    try:
        return fn(msg)
    except GnesfError as e:  # step smaller than a row, etc.
        raise InputRejected("data_size_mismatch", f"{what}: {e}") from None


def segmentation_array(msg, num_classes: int) -> np.ndarray:
    """Segmentation message -> HxW integer class indices or HxWxC float scores (what
    ExternalSegmenter reads from Frame.probs). Raises InputRejected (bad_segmentation)."""
    probs_encoding = f"32FC{num_classes}"
    if msg.encoding not in SEGMENTATION_ENCODINGS + (probs_encoding,):
        raise InputRejected("bad_segmentation", f"segmentation encoding '{msg.encoding}' not supported (class "
                                                f"indices {', '.join(SEGMENTATION_ENCODINGS)} or {probs_encoding})")
    try:
        check_image(msg, None, "segmentation")
    except InputRejected as e:
        raise InputRejected("bad_segmentation", str(e)) from None
    a = conv.image_to_numpy(msg)
    if a.dtype.kind == "f" and not (np.isfinite(a).all() and (a >= 0).all()):
        raise InputRejected("bad_segmentation", "segmentation probabilities contain NaN, inf or negative values")
    return a


def to_frame(item: SyncedInput, T_world_cam: np.ndarray, camera: CameraConfig, max_pixels: int,
             index: int, num_classes: int) -> Frame:
    """A synced colour (+ depth, + segmentation) input at pose T_world_cam (camera-to-map) ->
    Frame at the processing size (camera.height, camera.width). Raises InputRejected."""
    check_image(item.color, conv.COLOR_ENCODINGS, "colour image", max_pixels)
    rgb = _decode(conv.image_to_rgb, item.color, "colour image")
    h, w = rgb.shape[:2]
    info = item.info
    if (int(info.height), int(info.width)) != (h, w):
        raise InputRejected("camera_info_mismatch", f"camera_info is {info.width}x{info.height}, colour image {w}x{h}")
    try:
        K = validate_camera(np.asarray(info.k, np.float64).reshape(-1), (h, w), "camera_info",
                            described_size=(int(info.height), int(info.width)))
    except CameraModelError as e:
        raise InputRejected("bad_camera_info", str(e)) from None
    depth = None
    if item.depth is not None:
        check_image(item.depth, conv.DEPTH_ENCODINGS, "depth image", max_pixels)
        depth = _decode(conv.image_to_depth_m, item.depth, "depth image")
        if depth.shape != (h, w):
            raise InputRejected("depth_size_mismatch", f"depth {depth.shape[1]}x{depth.shape[0]} vs colour {w}x{h} "
                                                       "(depth must be registered to colour)")
    probs = None
    if item.segmentation is not None:
        probs = segmentation_array(item.segmentation, num_classes)
        sh, sw = probs.shape[:2]
        if abs(sh / sw - h / w) > 0.01:
            raise InputRejected("bad_segmentation", f"segmentation {sw}x{sh} and colour {w}x{h} differ in aspect ratio")
    size = (camera.height, camera.width)
    if (h, w) != size:
        shrink = h * w > size[0] * size[1]
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if depth is not None:
            depth = cv2.resize(depth, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        K = scale_intrinsics(K, (h, w), size)
    return Frame(stamp=item.stamp, rgb=rgb, K=K, T_world_cam=T_world_cam, depth=depth, probs=probs, index=index)
