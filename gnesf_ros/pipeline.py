"""Mapper: posed frames in, map updates out (used by gnesf-map and the ROS node alike).

frames -> keyframes (KeyframeSelector) -> fragment windows (FragmentBuilder) -> 2D segmenter
-> per mode:
  rgb, geometry volume  GNeSF.predict_fragment (learned SDF + voted semantics) -> map.integrate
  rgb, geometry mvs  plane-sweep depth of each keyframe from earlier keyframes (MvsDepthEstimator) fused as
                     rgbd fuses sensor depth (confidence as weight); semantics as rgbd
  rgbd               depth TSDF of each keyframe as it arrives (map.integrate_depth: the geometry is
                     current at once) + per window GNeSF.vote_semantics on the map's near-surface
                     voxels of the fragment -> map.integrate (semantics only)
  baseline_bayesian  depth TSDF + Kimera-Semantics Bayesian fusion of the segmenter's labels
  baseline_average   depth TSDF + running average of the segmenter's probabilities
Depth modes integrate keyframes only (each once, also when fragments overlap).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from gnesf_ros.classes import ClassTable, default_class_table
from gnesf_ros.config import ConfigError, MapperConfig
from gnesf_ros.errors import ModelError
from gnesf_ros.geometry.camera import is_valid_pose
from gnesf_ros.geometry.keyframes import FragmentBuilder, KeyframeSelector
from gnesf_ros.geometry.multiview import depth_agreement
from gnesf_ros.mapping import SemanticVoxelMap
from gnesf_ros.segmentation.base import build_segmenter, resolve_checkpoint, segment_frames
from gnesf_ros.types import Fragment, FragmentResult, Frame

log = logging.getLogger(__name__)

MODES = ("rgb", "rgbd", "baseline_bayesian", "baseline_average")
_BASELINE_FUSION = {"baseline_bayesian": "bayesian", "baseline_average": "average"}


@dataclass
class MapUpdate:
    """What one fragment changed: fragment index, voxels fused, stage timings (ms)."""

    fragment_index: int
    num_voxels: int
    timings_ms: dict = field(default_factory=dict)


class Mapper:
    """Online semantic mapper. ``segmenter`` (Segmenter protocol) and ``model`` (GNeSF) are
    built from ``cfg`` on first use when not given; baselines need no model."""

    def __init__(self, cfg: MapperConfig | None = None, segmenter=None, model=None,
                 class_table: ClassTable | None = None, depth_estimator=None):
        self.cfg = cfg or MapperConfig()
        if self.cfg.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got '{self.cfg.mode}'")
        self.class_table = class_table or default_class_table()
        self._segmenter = segmenter
        self._model = model
        self._depth_estimator = depth_estimator  # MvsDepthEstimator (rgb mode, geometry mvs)
        map_cfg = self.cfg.map
        if self.cfg.mode in _BASELINE_FUSION:
            map_cfg = dataclasses.replace(map_cfg, fusion=_BASELINE_FUSION[self.cfg.mode])
        self.map_cfg = map_cfg
        self.reset()

    # -- lifecycle -------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty map, fresh keyframe/fragment state and counters."""
        self.map = SemanticVoxelMap(self.map_cfg, self.class_table)
        self._selector = KeyframeSelector(self.cfg.keyframe)
        self._builder = FragmentBuilder(self.cfg.keyframe, voxel_size=self.map_cfg.voxel_size_m,
                                        max_depth_m=self.cfg.camera.max_depth_m, select_keyframes=False)
        self._integrated: list[Frame] = []  # keyframes of the last window and since (already depth-integrated)
        self._mvs_waiting: list[Frame] = []  # mvs: the stream's first keyframes, no baseline to match them yet
        if self._depth_estimator is not None:
            self._depth_estimator.reset()
        self._integrate_ms = 0.0  # rgbd: depth integration of the window's keyframes so far (its timings)
        self._depth_ms = 0.0  # rgb + mvs: depth prediction of the window's keyframes so far
        self.revision = 0  # bumped by every change of the map (a keyframe's depth, a fragment)
        self._size: tuple[int, int] | None = None
        self.counters = {"frames": 0, "keyframes": 0, "fragments": 0, "skipped_bad_pose": 0,
                         "skipped_size_mismatch": 0, "skipped_empty_fragment": 0, "vote_voxels": 0, "vote_unseen": 0}
        # Bounded: a long-running node must not grow with time (the last 1000 fragments).
        self.timings: deque[dict] = deque(maxlen=1000)

    @property
    def stats(self) -> dict:
        """Pipeline counters plus the map's (prefixed ``map_``) and its block count."""
        out = dict(self.counters)
        out.update({f"map_{k}": v for k, v in self.map.counters.items()})
        out["map_blocks"] = self.map.num_blocks
        return out

    def timing_summary(self) -> dict:
        """Per stage {p50, p95, mean} in ms over all processed fragments."""
        stages = sorted({k for t in self.timings for k in t})
        out = {}
        for s in stages:
            v = np.array([t[s] for t in self.timings if s in t])
            out[s] = {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
                      "mean": float(v.mean()), "n": int(v.size)}
        return out

    @property
    def segmenter(self):
        if self._segmenter is None:
            self._segmenter = build_segmenter(self.cfg.segmenter, self.class_table)
        return self._segmenter

    @property
    def depth_from_images(self) -> bool:
        """rgb mode with MVS geometry: keyframes get predicted depth and go the rgbd way."""
        return self.cfg.mode == "rgb" and self.cfg.model.geometry == "mvs"

    @property
    def fuses_depth_per_keyframe(self) -> bool:
        """Geometry integrated keyframe by keyframe (rgbd, rgb+mvs), semantics per window by GNeSF voting."""
        return self.cfg.mode == "rgbd" or self.depth_from_images

    @property
    def depth_estimator(self):
        if self._depth_estimator is None:
            from gnesf_ros.model.mvs import MvsDepthEstimator
            from gnesf_ros.model.train_mvs import load_depth_net

            net = load_depth_net(resolve_checkpoint(self.cfg.model.mvs_weights), self.cfg.model.device)
            m = self.cfg.model
            self._depth_estimator = MvsDepthEstimator(net, m.mvs_sources, refine_steps=m.mvs_refine_steps)
        return self._depth_estimator

    @property
    def model(self):
        if self._model is None:
            from gnesf_ros.model.gnesf import GNeSF
            self._model = GNeSF.load(resolve_checkpoint(self.cfg.model.weights), self.cfg.model,
                                     self.cfg.model.device)
        return self._model

    def load_models(self) -> None:
        """Load the segmenter and (modes rgb / rgbd) the GNeSF weights now rather than on the first
        fragment: a missing file fails at start and the first fragment is not delayed by loading."""
        self.segmenter  # noqa: B018
        self.warm_up()

    def warm_up(self) -> None:
        """Modes rgb / rgbd: load the GNeSF weights and run one forward on a synthetic window of the
        configured size; an image segmenter segments one dummy batch. The first fragment then runs as
        fast as the others."""
        cam = self.cfg.camera
        if self.cfg.segmenter.backend == "mask2former":
            t0 = time.perf_counter()
            batch = np.zeros((self.cfg.segmenter.batch_size, cam.height, cam.width, 3), np.uint8)
            self.segmenter.predict(batch)
            log.info("segmenter warmed up in %.2f s", time.perf_counter() - t0)
        if self.cfg.mode in ("rgb", "rgbd"):
            s = self.model.warm_up(self.cfg.keyframe.fragment_size, (cam.height, cam.width),
                                   self.fuses_depth_per_keyframe)
            log.info("GNeSF warmed up in %.2f s", s)
        if self.depth_from_images:
            t0 = time.perf_counter()
            self.depth_estimator.warm_up((cam.height, cam.width))
            log.info("MVS depth network warmed up in %.2f s", time.perf_counter() - t0)

    def load_map(self, path) -> None:
        """Replace the map with one saved by ``SemanticVoxelMap.save`` (resume mapping)."""
        self.map = SemanticVoxelMap.load(path, self.class_table)

    # -- frames ----------------------------------------------------------------------------
    def add_frame(self, frame: Frame) -> MapUpdate | None:
        """Feed one posed frame (any rate); returns a MapUpdate when a fragment was mapped."""
        return self.add_keyframe(frame) if self.select_keyframe(frame) else None

    def select_keyframe(self, frame: Frame) -> bool:
        """The keyframe test (NeuralRecon rule) for the next frame of the stream; an accepted frame
        becomes the reference of the next test and must then go to ``add_keyframe``. Split from it
        so that a node can select where frames arrive and map keyframes on another thread."""
        self.counters["frames"] += 1
        if not is_valid_pose(frame.T_world_cam):
            self.counters["skipped_bad_pose"] += 1
            return False
        if self._size is None:
            self._size = frame.size
        elif frame.size != self._size:
            self.counters["skipped_size_mismatch"] += 1
            log.warning("frame %d: size %s differs from the stream's %s; skipped", frame.index,
                        frame.size, self._size)
            return False
        if not self._selector.accept(frame.T_world_cam):
            return False
        self.counters["keyframes"] += 1
        return True

    def add_keyframe(self, frame: Frame) -> MapUpdate | None:
        """Add a keyframe (accepted by ``select_keyframe``) to the window; maps the window when full.
        rgbd integrates the keyframe's depth at once (``revision`` tells the map changed): the
        geometry does not wait for the window, the semantics of the new surface do."""
        ready = self._predict_depth(frame) if self.depth_from_images else [(frame, None)]
        update = None
        for f, confidence in ready:
            if self.fuses_depth_per_keyframe:
                t0 = time.perf_counter()
                if self.map.integrate_depth(f, None, confidence):
                    self.revision += 1
                self._integrated.append(f)
                self._integrate_ms += 1e3 * (time.perf_counter() - t0)
            fragment = self._builder.push(f)
            if fragment is not None:
                update = self._process(fragment)
        return update

    def _predict_depth(self, frame: Frame) -> list[tuple[Frame, np.ndarray | None]]:
        """rgb + mvs: the keyframe (and keyframes held before it) with predicted depth in place of sensor
        depth (0 where confidence < model.mvs_min_confidence) and the confidence as fusion weight. The
        stream's first keyframes have no earlier view with a baseline: they wait for one that has and are
        matched against it (at most a window of them is held)."""
        t0 = time.perf_counter()
        est = self.depth_estimator
        pred = est.estimate(frame, self._mvs_waiting + self._integrated)
        if pred is None and not self._integrated:  # nothing to match yet
            self._mvs_waiting = (self._mvs_waiting + [frame])[-self.cfg.keyframe.fragment_size:]
            return []
        out = [self._with_depth(f, est.estimate(f, [frame] + self._mvs_waiting)) for f in self._mvs_waiting]
        self._mvs_waiting = []
        out.append(self._with_depth(frame, pred))
        self._depth_ms += 1e3 * (time.perf_counter() - t0)
        return out

    def _with_depth(self, frame: Frame, pred: tuple | None) -> tuple[Frame, np.ndarray | None]:
        h, w = frame.size
        if pred is None:  # no earlier view with a usable baseline (pure rotation): no geometry from it
            return dataclasses.replace(frame, depth=np.zeros((h, w), np.float32)), None
        m = self.cfg.model
        depth, conf = pred
        depth = np.where(conf >= m.mvs_min_confidence, depth, 0.0).astype(np.float32)
        if m.mvs_agreement > 0:  # multi-view consistency with the last keyframes' predicted depth
            others = [(f.depth, f.K, f.T_world_cam) for f in self._integrated[-4:] if f.depth is not None]
            agrees, covered = depth_agreement(depth, frame.K, frame.T_world_cam, others, m.mvs_agreement)
            depth[covered & ~agrees] = 0.0
            conf = np.where(covered, conf, conf * m.mvs_unverified_weight)
        return dataclasses.replace(frame, depth=depth), np.where(depth > 0, conf, 0.0)

    @property
    def pending_keyframes(self) -> int:
        """Keyframes waiting for their fragment window to fill (mapped by ``flush``)."""
        return self._builder.pending

    @property
    def min_fragment_frames(self) -> int:
        """Fewest keyframes a fragment can be mapped from (the network needs model.min_views)."""
        return self.cfg.model.min_views if self.cfg.mode in ("rgb", "rgbd") else 1

    def flush(self) -> MapUpdate | None:
        """Map the incomplete last window (end of a stream, a pause). A window shorter than
        ``min_fragment_frames`` is completed with the previous window's last keyframes; with none
        to borrow (the stream's first keyframe) it stays pending and None is returned."""
        fragment = self._builder.flush(self.min_fragment_frames)
        return self._process(fragment) if fragment is not None else None

    # -- fragments -------------------------------------------------------------------------
    def _process(self, fragment: Fragment) -> MapUpdate:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}

        def lap(name: str, start: float) -> float:
            now = time.perf_counter()
            timings[name] = 1e3 * (now - start)
            return now

        mode = self.cfg.mode
        camera = fragment.frames[-1].T_world_cam[:3, 3]
        probs, timings["segment"] = self._segment(fragment)
        t = time.perf_counter()
        if mode == "rgb" and not self.depth_from_images:
            result = self.model.predict_fragment(fragment, probs)
            t = lap("model", t)
            fused = self._integrate(result, camera, fragment)
            t = lap("integrate", t)
        else:
            fused = self._integrate_depth(fragment, None if self.fuses_depth_per_keyframe else probs)
            t = lap("integrate", t)
            timings["integrate"] += self._integrate_ms  # rgbd, mvs: done keyframe by keyframe before
            self._integrate_ms = 0.0
            if self.depth_from_images:
                timings["depth"], self._depth_ms = self._depth_ms, 0.0
        if self.fuses_depth_per_keyframe:
            # the network votes on the voxels within model.vote_band_vox of the surface; the other
            # corners of surface-crossing cells (mesh vertices read them) get the mean of the seeing views
            band = self.cfg.model.vote_band_vox * self.map.voxel_size
            coords, sdf = self.map.voxels_near_surface(fragment.bounds, band, crossings=True)
            if len(coords):
                cls, sem_w = self.model.vote_semantics(fragment, probs, coords, sdf, self.map.voxel_size)
                t = lap("model", t)
                self.counters["vote_voxels"] += len(coords)
                self.counters["vote_unseen"] += int((sem_w == 0).sum())  # no view saw them unoccluded
                fused = self._integrate(FragmentResult(coords, sdf, cls, np.zeros(len(coords), np.float32),
                                                       self.map.voxel_size, sem_weight=sem_w), camera, fragment)
                t = lap("integrate_semantics", t)
        timings["total"] = 1e3 * (time.perf_counter() - t0)
        self.counters["fragments"] += 1
        self.revision += 1
        self.timings.append(timings)
        return MapUpdate(fragment.index, int(fused), timings)

    def _segment(self, fragment: Fragment) -> tuple[np.ndarray, float]:
        """Segmenter probabilities of the fragment's frames (N x H x W x C) and the time taken (ms)."""
        t0 = time.perf_counter()
        probs = segment_frames(self.segmenter, fragment.frames)
        n, (h, w) = len(fragment.frames), fragment.frames[0].size
        expected = (n, h, w, self.class_table.num_classes)
        if probs.shape != expected:
            raise ModelError(f"segmenter returned {probs.shape}, expected {expected}")
        return probs, 1e3 * (time.perf_counter() - t0)

    def _integrate_depth(self, fragment: Fragment, probs: np.ndarray | None) -> int:
        """Depth TSDF (+ label fusion of ``probs`` when given) of the keyframes not integrated yet."""
        fused = 0
        for i, f in enumerate(fragment.frames):
            if not any(f is g for g in self._integrated):
                fused += self.map.integrate_depth(f, None if probs is None else probs[i])
        self._integrated = list(fragment.frames)  # held, so overlap frames are found by identity
        return fused

    def _integrate(self, result: FragmentResult, camera: np.ndarray, fragment: Fragment) -> int:
        if len(result) == 0:
            self.counters["skipped_empty_fragment"] += 1
            log.info("fragment %d: no voxels predicted; skipped", fragment.index)
            return 0
        return self.map.integrate(result, camera_position=camera)
