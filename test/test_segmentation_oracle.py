"""Noisy oracle: seeded, soft, object-level confusions, calibrated 2D mIoU on synthetic views."""
import numpy as np
import pytest

from gnesf_ros.classes import IGNORE, default_class_table
from gnesf_ros.config import SegmenterConfig
from gnesf_ros.errors import DataError, ModelError
from gnesf_ros.segmentation import build_segmenter, segment_frames
from gnesf_ros.segmentation.oracle import NoisyOracleSegmenter, measure_miou
from gnesf_ros.types import Frame

TABLE = default_class_table()
C = {n: i for i, n in enumerate(TABLE.names)}


@pytest.fixture(scope="module")
def synthetic_frames():
    """32 Frames (120x160, depth and poses) of 4 held-out synthetic scenes (val seeds), from the generator."""
    from gnesf_ros.data.synthetic import SEED_RANGES
    from gnesf_ros.segmentation.train import render_views

    seeds = list(SEED_RANGES["val"])[:4]
    return [f for s in seeds for f in render_views(s, 8, (120, 160), TABLE)]


def room(h=60, w=80):
    """Wall above floor, a table and a desk (both confusable with each other)."""
    lab = np.full((h, w), C["wall"], np.uint8)
    lab[40:] = C["floor"]
    lab[25:50, 5:35] = C["table"]
    lab[25:50, 45:75] = C["desk"]
    lab[:3] = IGNORE
    return lab


def test_same_seed_and_frame_reproduce_other_seeds_or_frames_differ():
    a = NoisyOracleSegmenter(65, seed=3).predict_labels(room(), 7)
    b = NoisyOracleSegmenter(65, seed=3).predict_labels(room(), 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, NoisyOracleSegmenter(65, seed=4).predict_labels(room(), 7))
    assert not np.array_equal(a, NoisyOracleSegmenter(65, seed=3).predict_labels(room(), 8))


def test_probabilities_are_soft_normalised_and_uniform_on_ignore():
    oracle = NoisyOracleSegmenter(65)
    probs = oracle.predict_labels(room(), 0)
    assert probs.shape == (60, 80, 20) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    peak = probs.max(-1)[3:]
    assert 0.5 <= peak.min() and peak.max() < 0.99 and peak.mean() < 0.95  # soft, not one-hot
    np.testing.assert_allclose(probs[:3], 1 / 20, atol=1e-6)
    noisy = oracle.noisy_labels(room(), 0)
    np.testing.assert_array_equal(noisy[3:], probs[3:].argmax(-1))
    assert (noisy[:3] == IGNORE).all()
    # a confusable partner gets more probability than an unrelated class, on average over table pixels
    table_px = probs[30:45, 10:30].reshape(-1, 20)
    assert table_px[:, C["desk"]].mean() > table_px[:, C["toilet"]].mean()


def test_measured_miou_is_near_the_parameter(synthetic_frames):
    # calibrated on views with depth and poses (world-keyed draws, view factors); whole objects are
    # confused alike across views, so a set of 32 views of 4 scenes spreads more than the +-3 points a
    # large held-out set lands within: mean over two oracle seeds, +-5 points
    assert len(synthetic_frames) >= 24

    def miou(target, items):
        return np.mean([measure_miou(NoisyOracleSegmenter(target, seed=k), items) for k in (0, 1)])

    for target in (50, 65, 80):
        assert abs(miou(target, synthetic_frames) - target) <= 5, target
    # plain label images (distance and angle factors at their fallback constants): ordered by target
    labels = [f.labels for f in synthetic_frames]
    assert miou(50, labels) < miou(65, labels) < miou(80, labels)


def test_whole_objects_are_confused_with_partners():
    oracle = NoisyOracleSegmenter(strength=1.0, seed=0)
    majority = []
    for i in range(40):
        noisy = oracle.noisy_labels(room(), i)[30:45, 12:28]  # table interior
        majority.append(np.bincount(noisy.ravel(), minlength=256).argmax())
    counts = np.bincount(majority, minlength=20)
    assert counts[C["table"]] + counts[C["desk"]] >= 36  # else only flicker: the table becomes its visible partner
    assert 4 <= counts[C["desk"]] <= 16  # ~25 % of the views at full strength


def test_world_keyed_confusion_agrees_across_views():
    depth = np.full((60, 80), 2.0, np.float32)
    K = np.array([[80.0, 0, 40], [0, 80.0, 30], [0, 0, 1]])
    confused_views = []
    for seed in range(12):
        oracle = NoisyOracleSegmenter(strength=1.0, seed=seed)
        majority = [np.bincount(oracle.noisy_labels(room(), i, depth=depth, K=K, T_world_cam=np.eye(4))
                                [30:45, 12:28].ravel(), minlength=256).argmax() for i in range(6)]
        confused_views.append(sum(m == C["desk"] for m in majority))
    # all views of the object agree (up to flicker views); the draw itself differs between seeds
    assert all(n <= 2 or n >= 4 for n in confused_views), confused_views
    assert min(confused_views) <= 1 and max(confused_views) >= 5, confused_views


def test_segment_frames_and_errors():
    oracle = build_segmenter(SegmenterConfig(backend="oracle", oracle_miou=70, oracle_seed=2))
    frames = [Frame(stamp=0, rgb=np.zeros((60, 80, 3), np.uint8), K=np.eye(3), T_world_cam=np.eye(4),
                    labels=room(), index=i) for i in (5, 6)]
    out = segment_frames(oracle, frames)
    np.testing.assert_array_equal(out[0], NoisyOracleSegmenter(70, seed=2).predict_labels(room(), 5))
    frames[1].labels = None
    with pytest.raises(DataError, match="no ground-truth labels"):
        segment_frames(oracle, frames)
    with pytest.raises(ModelError, match="ground-truth labels, not pixels"):
        oracle.predict(np.zeros((1, 60, 80, 3), np.uint8))
    with pytest.raises(ModelError, match="mIoU"):
        NoisyOracleSegmenter(0)
    with pytest.raises(DataError, match="integer class-index"):
        oracle.predict_labels(np.zeros((60, 80), np.float32))


def test_frames_segmented_in_parallel_equal_one_at_a_time():
    frames = [Frame(stamp=0, rgb=np.zeros((60, 80, 3), np.uint8), K=np.array([[60.0, 0, 40], [0, 60, 30], [0, 0, 1]]),
                    T_world_cam=np.eye(4), depth=np.full((60, 80), 2.0 + 0.1 * i, np.float32), labels=room(), index=i)
              for i in range(6)]
    serial = segment_frames(NoisyOracleSegmenter(60, seed=5, threads=1), frames)
    parallel = segment_frames(NoisyOracleSegmenter(60, seed=5, threads=2), frames)
    np.testing.assert_array_equal(serial, parallel)
    assert not np.array_equal(serial[0], serial[1])  # per-frame noise: the order is checked too


def test_temperature_flattens_without_changing_the_argmax():
    sharp = NoisyOracleSegmenter(65, seed=1).predict_labels(room(), 3)
    flat = NoisyOracleSegmenter(65, seed=1, temperature=3.0).predict_labels(room(), 3)
    np.testing.assert_array_equal(sharp.argmax(-1), flat.argmax(-1))
    assert flat.max(-1)[3:].mean() < sharp.max(-1)[3:].mean() - 0.1
    # independent check of the tempering: p ** (1/T), renormalised
    expected = sharp ** (1 / 3.0)
    np.testing.assert_allclose(flat, expected / expected.sum(-1, keepdims=True), rtol=1e-4, atol=1e-6)


def easy_and_hard_error(oracle_cls, seed: int = 2000, views: int = 12) -> tuple[float, float, int]:
    """Class-mean error rate of the oracle's labels on near, centred pixels vs far pixels at the image
    border, over views of one unseen test scene; classes seen both ways (>= 200 px each) only."""
    from gnesf_ros.segmentation.train import render_views

    frames = render_views(seed, views, (120, 160), TABLE)
    depth = np.concatenate([f.depth[f.labels != IGNORE] for f in frames])
    near, far = np.percentile(depth, [33, 67])
    ys, xs = np.mgrid[0:120, 0:160]
    to_border = np.minimum(np.minimum(ys, 119 - ys), np.minimum(xs, 159 - xs))
    counts = np.zeros((2, 2, TABLE.num_classes))  # (easy, hard) x (wrong, all) x class
    oracle = oracle_cls(seed=0, strength=0.5)
    for f in frames:
        pred = oracle.noisy_labels(f.labels, f.index, depth=f.depth, K=f.K, T_world_cam=f.T_world_cam)
        valid = f.labels != IGNORE
        easy = valid & (f.depth < near) & (to_border >= 16)
        hard = valid & (f.depth > far) & (to_border < 8)
        for k, m in enumerate((easy, hard)):
            gt = f.labels[m].astype(np.int64)
            counts[k, 0] += np.bincount(gt, (pred != f.labels)[m], TABLE.num_classes)
            counts[k, 1] += np.bincount(gt, minlength=TABLE.num_classes)
    both = (counts[:, 1] >= 200).all(0)
    err = counts[:, 0, both] / counts[:, 1, both]
    return float(err[0].mean()), float(err[1].mean()), int(both.sum())


def test_errors_grow_with_distance_and_at_the_border():
    # the same kinds of surfaces: near and centred are labelled correctly more often than far and at the border
    easy, hard, classes = easy_and_hard_error(NoisyOracleSegmenter)
    assert classes >= 3
    assert hard > 2 * easy + 0.05, (easy, hard)


def test_view_factors_without_depth_fall_back_to_constants():
    from gnesf_ros.segmentation import oracle as mod

    f = NoisyOracleSegmenter(65).difficulty(room())
    assert (f["depth"] == mod.DEPTH_FACTOR_FALLBACK).all() and (f["angle"] == mod.ANGLE_FACTOR_FALLBACK).all()
    assert f["border"][0, 0] == 1.0 and f["border"][30, 40] == 0.0
    # with depth: a fronto-parallel wall far away, seen head-on, has no grazing angle and full distance
    K = np.array([[80.0, 0, 40], [0, 80.0, 30], [0, 0, 1]])
    g = NoisyOracleSegmenter(65).difficulty(room(), depth=np.full((60, 80), 6.0, np.float32), K=K)
    assert np.allclose(g["depth"], 1.0) and g["angle"].max() < 0.05
    # a floor plane seen from 1.4 m height at grazing incidence near the horizon
    ys = np.arange(60, dtype=np.float32)[:, None] - 30
    floor_depth = np.where(ys > 0, 1.4 * 80 / np.maximum(ys, 1e-3), 0).astype(np.float32) * np.ones((1, 80), np.float32)
    h = NoisyOracleSegmenter(65).difficulty(room(), depth=floor_depth, K=K)
    assert h["angle"][33, 40] > 0.8 and h["angle"][58, 40] < h["angle"][33, 40]
