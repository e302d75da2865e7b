"""External segmenter adapter: probabilities / label images from another process, validated."""
import numpy as np
import pytest

from gnesf_ros.config import SegmenterConfig
from gnesf_ros.errors import DataError, ModelError
from gnesf_ros.segmentation import build_segmenter, segment_frames
from gnesf_ros.segmentation.external import ExternalSegmenter
from gnesf_ros.types import Frame


def frame(probs, size=(6, 8), index=0):
    return Frame(stamp=0.0, rgb=np.zeros(size + (3,), np.uint8), K=np.eye(3), T_world_cam=np.eye(4),
                 probs=probs, index=index)


@pytest.fixture
def ext():
    return build_segmenter(SegmenterConfig(backend="external", external_label_confidence=0.81))


def test_probabilities_pass_through_normalised(ext):
    rng = np.random.default_rng(0)
    scores = rng.random((6, 8, 20)).astype(np.float32)
    out = segment_frames(ext, [frame(scores), frame(scores * 3, index=1)])
    assert out.shape == (2, 6, 8, 20) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], scores / scores.sum(-1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-5)


def test_label_image_becomes_soft_probabilities(ext):
    labels = np.full((6, 8), 3, np.uint8)
    labels[0, 0] = 255
    labels[1, 1] = 19
    out = segment_frames(ext, [frame(labels)])[0]
    assert out[2, 2, 3] == pytest.approx(0.81)
    assert out[2, 2, 0] == pytest.approx(0.19 / 19)
    assert out[1, 1].argmax() == 19
    np.testing.assert_allclose(out[0, 0], 1 / 20)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-6)


def test_lower_resolution_input_is_resized():
    seg = ExternalSegmenter()
    labels = np.zeros((3, 4), np.int32)
    labels[:, 2:] = 5
    out = seg.predict_frames([frame(labels[..., None])])[0]
    assert out.shape == (6, 8, 20)
    np.testing.assert_array_equal(out.argmax(-1)[:, :4], 0)
    np.testing.assert_array_equal(out.argmax(-1)[:, 4:], 5)


@pytest.mark.parametrize("probs, message", [
    (np.ones((6, 8, 19), np.float32), "must be H x W x 20"),
    (-np.ones((6, 8, 20), np.float32), "not logits"),
    (np.full((6, 8, 20), np.nan, np.float32), "NaN"),
    (np.ones((6, 8, 20), np.int64), "must be float"),
    (np.ones((6, 6, 20), np.float32), "aspect ratios differ"),
    (None, "has no probabilities"),
])
def test_bad_inputs_are_rejected(ext, probs, message):
    with pytest.raises(DataError, match=message):
        segment_frames(ext, [frame(probs)])


def test_predict_without_frames_explains_itself(ext):
    with pytest.raises(ModelError, match="frame.probs"):
        ext.predict(np.zeros((1, 6, 8, 3), np.uint8))
