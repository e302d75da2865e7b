"""Training windows from synthetic scenes: source views, held-out views, TSDF targets.

A window = ``views`` keyframes of a camera path (chosen by the KeyframeSelector, as at inference)
plus ``heldout_views`` path frames between them that only supervise the rendered semantics.
Geometry targets: the depth maps of every path frame spanned by the window are fused into a
projective TSDF at any query points (NeuralRecon's targets come from depth fusion too).
2D probabilities S_i: the noisy oracle (gnesf_ros.segmentation.oracle) at ``oracle_miou``, with
world-keyed confusions so that views of a window err consistently, like a real segmenter.
Scenes: ``gnesf_ros.data.synthetic`` (build_scene / camera_path); ``BoxScene`` is a tiny
stand-in (a room with boxes) for tests and smoke runs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import open3d as o3d

from gnesf_ros.classes import load_class_table
from gnesf_ros.config import GnesfTrainConfig, KeyframeConfig
from gnesf_ros.data.synthetic import default_intrinsics, frame_noise_seed
from gnesf_ros.geometry.camera import scale_intrinsics
from gnesf_ros.segmentation.oracle import NoisyOracleSegmenter

log = logging.getLogger(__name__)


class BoxScene:
    """Axis-aligned boxes with NYU40 labels, rendered by ray casting (test / smoke stand-in).

    render(T_world_cam, K, size) -> (rgb HxWx3 uint8, depth HxW float32 m (0 = no hit), nyu40 HxW uint8)."""

    def __init__(self, boxes: list[tuple[np.ndarray, np.ndarray, int]], seed: int = 0):
        meshes, labels = o3d.geometry.TriangleMesh(), []
        for lo, hi, label in boxes:
            m = o3d.geometry.TriangleMesh.create_box(*(np.asarray(hi) - np.asarray(lo)))
            m.translate(np.asarray(lo, np.float64))
            meshes += m
            labels += [label] * len(m.triangles)
        self.labels = np.asarray(labels, np.uint8)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(meshes))
        rng = np.random.default_rng(seed)
        self.albedo = rng.integers(40, 230, (256, 3)).astype(np.float32)

    def render(self, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int], noise_seed: int | None = None):
        """Noise-free flat-shaded render; ``noise_seed`` is accepted for SyntheticScene's signature."""
        h, w = size
        u, v = np.meshgrid(np.arange(w), np.arange(h))
        cam = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(K).T
        dirs = cam @ T_world_cam[:3, :3].T
        rays = np.concatenate([np.broadcast_to(T_world_cam[:3, 3], dirs.shape), dirs], 1).astype(np.float32)
        hit = self.scene.cast_rays(o3d.core.Tensor(rays))
        t = hit["t_hit"].numpy()
        ok = np.isfinite(t)
        prim = hit["primitive_ids"].numpy()
        label = np.where(ok, self.labels[np.where(ok, prim, 0)], 0).astype(np.uint8)
        normal = hit["primitive_normals"].numpy()
        shade = 0.5 + 0.5 * np.abs(normal @ np.array([0.3, 0.5, 0.8]))
        rgb = np.where(ok[:, None], self.albedo[label] * shade[:, None], 0).clip(0, 255).astype(np.uint8)
        depth = np.where(ok, t, 0.0).astype(np.float32)  # rays have z = 1 in the camera: t is depth
        return rgb.reshape(h, w, 3), depth.reshape(h, w), label.reshape(h, w)

    def render_geometry(self, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]):
        """(depth HxW float32 m, nyu40 HxW uint8, None), as SyntheticScene.render_geometry."""
        _, depth, label = self.render(T_world_cam, K, size)
        return depth, label, None


def box_room(seed: int) -> BoxScene:
    """A 4 x 4 x 2.6 m room (floor, walls) with a table, a cabinet and a chair-sized box placed by ``seed``."""
    rng = np.random.default_rng(seed)
    t = 0.1
    boxes = [(np.array([-2, -2, -t]), np.array([2, 2, 0]), 2),  # floor (nyu40 2)
             (np.array([-2 - t, -2, 0]), np.array([-2, 2, 2.6]), 1), (np.array([2, -2, 0]), np.array([2 + t, 2, 2.6]), 1),
             (np.array([-2, -2 - t, 0]), np.array([2, -2, 2.6]), 1), (np.array([-2, 2, 0]), np.array([2, 2 + t, 2.6]), 1)]
    for label, size in ((7, (1.0, 0.6, 0.75)), (3, (0.5, 0.8, 1.2)), (5, (0.45, 0.45, 0.9))):
        c = rng.uniform(-1.3, 1.3, 2)
        lo = np.array([c[0] - size[0] / 2, c[1] - size[1] / 2, 0.0])
        boxes.append((lo, lo + np.array(size), label))
    return BoxScene(boxes, seed)


def orbit_path(frames: int, seed: int, radius: float = 0.6, height: float = 1.4) -> list[np.ndarray]:
    """Camera-to-world poses turning slowly around the room centre, looking outwards and slightly down (z up)."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi)
    poses = []
    for i in range(frames):
        a = phase + 2 * np.pi * i / frames
        pos = np.array([radius * np.cos(a), radius * np.sin(a), height])
        fwd = np.array([np.cos(a + 0.8), np.sin(a + 0.8), -0.35])
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0, 0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        T = np.eye(4)
        T[:3, :3] = np.stack([right, down, fwd], 1)
        T[:3, 3] = pos
        poses.append(T)
    return poses


@dataclass
class Window:
    """One training sample. Source views: rgb N x H x W x 3 uint8, probs N x H x W x C, K N x 3 x 3, T N x 4 x 4,
    depth N x H x W metres (rgbd-mode inputs; the losses use depth_d).
    Held-out: labels_t M x H x W uint8 class indices, K_t, T_t. Depth for TSDF targets: depth_d D x H x W, K_d, T_d."""

    rgb: np.ndarray
    probs: np.ndarray
    K: np.ndarray
    T: np.ndarray
    labels: np.ndarray
    labels_t: np.ndarray
    probs_t: np.ndarray
    K_t: np.ndarray
    T_t: np.ndarray
    depth_d: np.ndarray
    K_d: np.ndarray
    T_d: np.ndarray
    depth: np.ndarray | None = None


class WindowSampler:
    """Draws training windows from scenes with seeds in [cfg.train_seed_start, + count)."""

    def __init__(self, cfg: GnesfTrainConfig, rank: int = 0, scene_source: str = "synthetic"):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed + 1000 * rank)
        self.size = (cfg.height, cfg.width)
        self.K = default_intrinsics(self.size)
        self.table = load_class_table()
        self.lut = self.table.nyu40_to_index_lut()
        self.source = scene_source
        self._scene = lru_cache(maxsize=4)(self._build)
        self.oracle = NoisyOracleSegmenter(cfg.oracle_miou, seed=cfg.seed + rank, class_table=self.table)

    def _build(self, seed: int):
        if self.source == "boxes":
            scene = box_room(seed)
            return scene, orbit_path(self.cfg.frames_per_scene, seed)
        from gnesf_ros.data.synthetic import build_scene, camera_path

        scene = build_scene(seed)
        return scene, camera_path(scene, self.cfg.frames_per_scene, seed)

    def sample(self) -> Window:
        from gnesf_ros.geometry.keyframes import KeyframeSelector

        seed = int(self.cfg.train_seed_start + self.rng.integers(self.cfg.train_seed_count))
        scene, path = self._scene(seed)
        sel = KeyframeSelector(KeyframeConfig())
        keys = [i for i, T in enumerate(path) if sel.accept(T)]
        n = self.cfg.views
        if len(keys) < n:
            keys = list(np.linspace(0, len(path) - 1, n).round().astype(int))
        start = int(self.rng.integers(len(keys) - n + 1))
        src = keys[start:start + n]
        between = [i for i in range(src[0], src[-1] + 1) if i not in src]
        held = list(self.rng.choice(between, size=min(self.cfg.heldout_views, len(between)), replace=False)) \
            if between else src[:1]
        fuse = sorted(set(src) | set(held) | set(range(src[0], src[-1] + 1, 3)))
        # one sensor-noise seed per frame: a shared seed puts the same noise pattern in every view,
        # i.e. structure fixed to the image plane that matches across views like a surface at infinity
        cache = {i: scene.render(path[i], self.K, self.size, noise_seed=frame_noise_seed(seed, i))
                 for i in sorted(set(src) | set(held))}
        # TSDF targets only need depth: half resolution, no shading
        size_d = (self.size[0] // 2, self.size[1] // 2)
        K_d = scale_intrinsics(self.K, self.size, size_d)
        depth_d = np.stack([scene.render_geometry(path[i], K_d, size_d)[0] for i in fuse])
        lab = lambda i: self.lut[cache[i][2]]
        probs = lambda idx: np.stack([self.oracle.predict_labels(lab(i), 100000 * seed + i, cache[i][1], self.K, path[i])
                                      for i in idx])
        return Window(
            rgb=np.stack([cache[i][0] for i in src]), probs=probs(src), K=np.stack([self.K] * n),
            T=np.stack([path[i] for i in src]), labels=np.stack([lab(i) for i in src]),
            labels_t=np.stack([lab(i) for i in held]), probs_t=probs(held), K_t=np.stack([self.K] * len(held)),
            T_t=np.stack([path[i] for i in held]), depth_d=depth_d,
            K_d=np.stack([K_d] * len(fuse)), T_d=np.stack([path[i] for i in fuse]),
            depth=np.stack([cache[i][1] for i in src]))
