"""Mapper on the analytic box scene: baseline modes end to end, counters, rgb/rgbd wiring."""
import numpy as np
import pytest

from gnesf_ros.config import ConfigError, MapperConfig
from gnesf_ros.pipeline import Mapper
from mapping_scene import box_face_pixels, box_fragment, intrinsics, look_at, one_hot, orbit_frames, render_analytic

C = 20
SIZE = (48, 64)


class LabelSegmenter:
    """2D 'segmenter' that returns the one-hot of the ground-truth labels (255 -> uniform)."""

    num_classes = C

    def predict_frames(self, frames):
        p = np.stack([one_hot(f.labels, C) for f in frames])
        p[p.sum(-1) == 0] = 1.0 / C
        return p


def config(mode, **keyframe):
    cfg = MapperConfig(mode=mode)
    for k, v in keyframe.items():
        setattr(cfg.keyframe, k, v)
    return cfg


def label_accuracy(vmap):
    size = (60, 80)
    K = intrinsics(size)
    T = look_at([1.4, 0.8, 1.0], [0, 0, 0.2])
    labels, depth = vmap.render(T, K, size)
    gt_depth, gt_labels = render_analytic(T, K, size)
    on = box_face_pixels(T, K, size, margin=0.08) & (depth > 0)
    assert on.sum() > 200
    return (labels[on] == gt_labels[on]).mean()


@pytest.mark.parametrize("mode", ["baseline_bayesian", "baseline_average"])
def test_baseline_modes_map_the_box(mode):
    frames = orbit_frames(20, SIZE)  # 18 deg and 0.5 m apart: every frame is a keyframe
    mapper = Mapper(config(mode, fragment_size=6, fragment_overlap=2), segmenter=LabelSegmenter())
    assert mapper.map.cfg.fusion == ("bayesian" if mode == "baseline_bayesian" else "average")
    updates = [u for u in (mapper.add_frame(f) for f in frames) if u is not None]
    last = mapper.flush()
    assert last is not None
    updates.append(last)
    s = mapper.stats
    assert s["frames"] == 20 and s["keyframes"] == 20
    # Windows of 6 with overlap 2 -> new keyframes per window 6, 4, 4, 4, then 2 on flush.
    assert s["fragments"] == len(updates) == 5
    assert s["map_frames_integrated"] == 20  # overlapping keyframes are integrated once
    assert all({"segment", "integrate", "total"} <= set(u.timings_ms) for u in updates)
    assert label_accuracy(mapper.map) > 0.95
    summary = mapper.timing_summary()
    assert summary["total"]["n"] == 5 and summary["total"]["p95"] >= summary["total"]["p50"] > 0
    mapper.reset()
    assert mapper.map.num_blocks == 0 and mapper.stats["frames"] == 0


def test_bad_frames_are_skipped_and_counted():
    frames = orbit_frames(4, SIZE)
    mapper = Mapper(config("baseline_average", fragment_size=2), segmenter=LabelSegmenter())
    bad = frames[1]
    bad.T_world_cam = np.full((4, 4), np.nan)
    small = orbit_frames(1, (24, 32), start_deg=45)[0]
    nodepth = orbit_frames(1, SIZE, start_deg=200)[0]
    nodepth.depth = np.zeros(SIZE, np.float32)
    for f in (frames[0], bad, small, frames[2], nodepth, frames[3]):
        mapper.add_frame(f)
    mapper.flush()
    s = mapper.stats
    assert s["frames"] == 6 and s["skipped_bad_pose"] == 1 and s["skipped_size_mismatch"] == 1
    assert s["keyframes"] == 4 and s["map_frames_integrated"] == 3 and s["map_frames_skipped_no_depth"] == 1


class BoxModel:
    """Stand-in for GNeSF returning the analytic box SDF (class by height) for any fragment,
    and a fixed class for voting; used to test the Mapper's wiring, not the model."""

    def __init__(self, vote_class=9):
        self.vote_class = vote_class
        self.calls = []

    def predict_fragment(self, fragment, probs):
        self.calls.append(("predict", len(fragment.frames), probs.shape))
        return box_fragment(split_z=0.45)  # top class above 0.45 m: the top face

    def vote_semantics(self, fragment, probs, coords, sdf, voxel_size):
        self.calls.append(("vote", len(coords)))
        cls = np.zeros((len(coords), C), np.float32)
        cls[:, self.vote_class] = 1.0
        return cls, np.ones(len(coords), np.float32)


def test_rgb_mode_fuses_model_fragments():
    model = BoxModel()
    cfg = config("rgb", fragment_size=4)
    cfg.model.geometry = "volume"  # the feature-volume design: geometry and semantics from predict_fragment
    mapper = Mapper(cfg, segmenter=LabelSegmenter(), model=model)
    for f in orbit_frames(8, SIZE):
        mapper.add_frame(f)
    assert mapper.stats["fragments"] == 2 and model.calls[0] == ("predict", 4, (4,) + SIZE + (C,))
    assert mapper.stats["map_fragments_integrated"] == 2
    assert label_accuracy(mapper.map) > 0.97


def test_rgbd_mode_takes_geometry_from_depth_and_semantics_from_voting():
    model = BoxModel(vote_class=9)
    mapper = Mapper(config("rgbd", fragment_size=4), segmenter=LabelSegmenter(), model=model)
    for f in orbit_frames(8, SIZE):
        mapper.add_frame(f)
    assert [c[0] for c in model.calls] == ["vote", "vote"] and model.calls[0][1] > 1000
    verts, faces, labels, _ = mapper.map.mesh_arrays()
    assert len(faces) > 1000
    assert (labels == 9).mean() > 0.95  # voted class everywhere near the surface


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="mode"):
        Mapper(MapperConfig(mode="lidar"))


def test_default_yaml_mirrors_the_config_dataclasses():
    """config/default.yaml is generated from the dataclasses and must be current and loadable."""
    import dataclasses
    import json

    from gnesf_ros.config import default_yaml, load_config
    from gnesf_ros.paths import config_dir

    path = config_dir() / "default.yaml"
    assert path.read_text() == default_yaml(), \
        "config/default.yaml is stale: python -m gnesf_ros.config > config/default.yaml"

    def norm(cfg):
        return json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples -> lists like YAML

    assert norm(load_config(path)) == norm(MapperConfig())


def test_rgbd_flush_of_a_single_keyframe_borrows_the_previous_window():
    """The shipped network needs >= model.min_views (2) views: a last window of one keyframe is
    completed with the previous window's last keyframe (not integrated twice); a stream of one
    keyframe stays pending instead of failing."""
    frames = orbit_frames(5, SIZE)
    mapper = Mapper(config("rgbd", fragment_size=4), segmenter=LabelSegmenter())
    assert mapper.min_fragment_frames == 2
    updates = [u for u in (mapper.add_frame(f) for f in frames) if u is not None]
    assert len(updates) == 1 and mapper.pending_keyframes == 1
    assert mapper.flush() is not None and mapper.pending_keyframes == 0
    assert mapper.stats["fragments"] == 2 and mapper.stats["map_frames_integrated"] == 5

    lone = Mapper(config("rgbd", fragment_size=4), segmenter=LabelSegmenter(), model=mapper.model)
    lone.add_frame(frames[0])
    assert lone.flush() is None and lone.pending_keyframes == 1  # kept for the next keyframes
    lone.add_frame(frames[1])
    assert lone.flush() is not None and lone.pending_keyframes == 0
