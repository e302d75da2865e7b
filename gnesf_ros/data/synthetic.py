"""Procedural synthetic indoor scenes written in ScanNet's layout (the project's stand-in for ScanNet).

    scene = build_scene(seed=3, rooms=1)                  # rooms, furniture, materials, lights
    rgb, depth, nyu40 = scene.render(T_world_cam, K, (480, 640))  # style=synth_render.CAMERA (default)
    poses = camera_path(scene, frames=300, seed=3)       # 30 Hz handheld-like scan
    mesh = scene.gt_mesh()                               # dense labelled GT mesh (edges <= 3 cm)
    generate_scene("data/synth", seed=3)                 # scene0003_00/ in ScanNet's exported layout

Frames: world z up with the floor at z = 0 (scenes are rotated about z and shifted at random, so
axes are not room-aligned); poses T_world_cam camera-to-world, optical frame (x right, y down,
z forward); depth in metres along the optical axis (0 = no hit or beyond 10 m); labels are NYU40
ids (0 = unannotated) in memory and ScanNet raw ids (see ``LABEL_TSV``) in label-filt images.
Everything is a deterministic function of the seed.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import numpy as np
import open3d as o3d

from gnesf_ros.data import synth_render as sr
from gnesf_ros.data.labelmap import LABEL_TSV_NAME
from gnesf_ros.data.ply import LabeledMesh, write_labeled_ply
from gnesf_ros.data.scannet import GT_MESH_SUFFIX, ScanNetWriter
from gnesf_ros.data.synth_layout import Layout, build_layout
from gnesf_ros.data.synth_mesh import merge_parts
from gnesf_ros.data.synth_objects import LABEL_TSV, raw_label_table
from gnesf_ros.data.synth_trajectory import camera_path
from gnesf_ros.errors import DataError

log = logging.getLogger(__name__)

#: Documented seed ranges (inclusive start, exclusive end) for the data splits.
SEED_RANGES: dict[str, range] = {"train": range(0, 1000), "val": range(1000, 2000), "test": range(2000, 3000)}

#: ScanNet's NYU40 colour palette (util.create_color_palette), index = NYU40 id, RGB.
NYU40_PALETTE = np.array([
    (0, 0, 0), (174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34),
    (140, 86, 75), (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189), (196, 156, 148),
    (23, 190, 207), (178, 76, 76), (247, 182, 210), (66, 188, 102), (219, 219, 141), (140, 57, 197),
    (202, 185, 52), (51, 176, 203), (200, 54, 131), (92, 193, 61), (78, 71, 183), (172, 114, 82),
    (255, 127, 14), (91, 163, 138), (153, 98, 156), (140, 153, 101), (158, 218, 229), (100, 125, 154),
    (178, 127, 135), (120, 185, 128), (146, 111, 194), (44, 160, 44), (112, 128, 144), (96, 207, 209),
    (227, 119, 194), (213, 92, 176), (94, 106, 211), (82, 84, 163), (100, 85, 144)], np.uint8)

GT_MAX_EDGE_M = 0.03
DEPTH_SIZE = (480, 640)  # ScanNet's depth resolution (height, width)

__all__ = ["SEED_RANGES", "NYU40_PALETTE", "LABEL_TSV", "SyntheticScene", "build_scene", "camera_path",
           "default_intrinsics", "frame_noise_seed", "generate_scene", "scene_name"]


def default_intrinsics(size: tuple[int, int]) -> np.ndarray:
    """ScanNet-like pinhole K (3x3, pixels) for an image of ``size`` (height, width): ~58 deg
    horizontal field of view, principal point at the centre (pixel centres at integers)."""
    h, w = size
    f = 577.87 * w / 640.0
    return np.array([[f, 0, (w - 1) / 2.0], [0, f, (h - 1) / 2.0], [0, 0, 1]])


class SyntheticScene:
    """A generated scene: coarse triangle mesh for raycasting + per-part labels and materials.

    Attributes: seed; rooms (layout-frame rectangles); doorways (2D layout-frame centres);
    T_world_layout (4x4 layout -> world); num_triangles.
    """

    def __init__(self, seed: int, layout: Layout):
        self.seed = seed
        self.layout = layout
        self.rooms = layout.rooms
        self.doorways = layout.doorways
        self.T_world_layout = layout.T_world_layout
        self._T_layout_world = np.linalg.inv(layout.T_world_layout)
        verts, faces, tri_part, _ = merge_parts(layout.parts)
        self._vertices = verts.astype(np.float32)
        self._faces = faces.astype(np.uint32)
        self._rc = o3d.t.geometry.RaycastingScene()
        self._rc.add_triangles(o3d.core.Tensor(self._vertices), o3d.core.Tensor(self._faces))
        self._rc.compute_distance(o3d.core.Tensor(np.zeros((1, 3), np.float32)))  # build the BVH now, not
        # lazily inside the first (possibly concurrent) query: render() may be called from several threads
        table = raw_label_table()
        self._nyu_of_raw = {raw: nyu for raw, nyu in table.values()}
        self._tables = sr.make_tables(layout.parts, layout.materials, layout.rooms, layout.T_world_layout,
                                      tri_part, self._nyu_of_raw, np.random.default_rng([seed, 31]))

    @property
    def num_triangles(self) -> int:
        return int(len(self._faces))

    @property
    def bounds(self) -> np.ndarray:
        """2x3 world AABB (min, max) of the scene geometry in metres."""
        return np.stack([self._vertices.min(0), self._vertices.max(0)]).astype(np.float64)

    def classes_present(self) -> set[int]:
        """NYU40 ids of all parts in the scene."""
        return {int(x) for x in np.unique(self._tables.part_nyu40)}

    def layout_to_world(self, pts: np.ndarray) -> np.ndarray:
        """Layout-frame points (N x 3) -> world frame."""
        T = self.T_world_layout
        return np.asarray(pts, float) @ T[:3, :3].T + T[:3, 3]

    def world_to_layout(self, pts: np.ndarray) -> np.ndarray:
        T = self._T_layout_world
        return np.asarray(pts, float) @ T[:3, :3].T + T[:3, 3]

    def distance(self, points_world: np.ndarray) -> np.ndarray:
        """Unsigned distance (metres, N) from world points (N x 3) to the nearest scene surface."""
        q = o3d.core.Tensor(np.asarray(points_world, np.float32).reshape(-1, 3))
        return self._rc.compute_distance(q).numpy().astype(np.float64)

    def object_centres_layout(self) -> list[np.ndarray]:
        """Centres (layout frame) of furniture parts (everything but walls, floor, ceiling, lights)."""
        skip = {raw_label_table()[n][0] for n in ("wall", "floor", "ceiling", "doorframe", "lamp")}
        out = []
        for p in self.layout.parts:
            if p.raw_id in skip:
                continue
            out.append((self._T_layout_world @ p.T_world_part)[:3, 3])
        return out

    def render_full(self, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int],
                    noise_seed: int | None = 0, style: sr.RenderStyle = sr.CAMERA
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`render`, plus the ScanNet raw id image (HxW uint16, 0 = no hit)."""
        T_world_cam, K = np.asarray(T_world_cam, float), np.asarray(K, float)
        rays, depth, tri, normals = sr.raycast(self._rc, T_world_cam, K, size)
        nyu, raw = self._labels(tri)
        k = int(style.supersample)
        if k <= 1:
            lin = sr.shade_linear(self._tables, rays, depth, tri, normals, self._rc, style)
        else:
            # k x k rays per pixel; depth and labels stay those of the pixel centre ray (GT unchanged)
            fine = (size[0] * k, size[1] * k)
            rays_f, depth_f, tri_f, normals_f = sr.raycast(self._rc, T_world_cam, _supersampled_K(K, k), fine)
            lin = sr.downsample(sr.shade_linear(self._tables, rays_f, depth_f, tri_f, normals_f, self._rc, style), k)
        rgb = sr.finish(lin, noise_seed, style, self.exposure if style.auto_exposure else 1.0)
        return rgb, depth, nyu, raw

    @cached_property
    def exposure(self) -> float:
        """Linear-light exposure of the CAMERA style, fixed per scene (a camera whose auto exposure
        locks at the start of the scan: constant over frames, so brightness constancy holds).
        Measured on 32x24 probe views from each room centre at 1.4 m looking level in 4 directions."""
        size = (24, 32)
        poses = []
        for r in self.rooms:
            c = self.layout_to_world(np.array([[(r.x0 + r.x1) / 2, (r.y0 + r.y1) / 2, 0.0]]))[0]
            for k in range(4):
                a = np.pi / 2 * k
                fwd, right = np.array([np.cos(a), np.sin(a), 0.0]), np.array([np.sin(a), -np.cos(a), 0.0])
                T = np.eye(4)
                T[:3, :3] = np.stack([right, np.cross(fwd, right), fwd], 1)  # optical: x right, y down, z fwd
                T[:3, 3] = [c[0], c[1], 1.4]
                poses.append(T)
        return sr.probe_exposure(self._tables, self._rc, poses, default_intrinsics(size), size)

    def render_geometry(self, T_world_cam: np.ndarray, K: np.ndarray,
                        size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Depth (HxW float32 m), NYU40 (HxW uint8) and raw id (HxW uint16) images, no shading."""
        _, depth, tri, _ = sr.raycast(self._rc, np.asarray(T_world_cam, float), np.asarray(K, float), size)
        return (depth, *self._labels(tri))

    def _labels(self, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        part = self._tables.tri_part[np.maximum(tri, 0)]
        nyu = np.where(tri >= 0, self._tables.part_nyu40[part], 0).astype(np.uint8)
        raw = np.where(tri >= 0, self._tables.part_raw[part], 0).astype(np.uint16)
        return nyu, raw

    def render(self, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int],
               noise_seed: int | None = 0, style: sr.RenderStyle = sr.CAMERA
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render one view.

        T_world_cam: 4x4 camera-to-world (optical frame); K: 3x3 pixels for ``size`` = (height, width);
        noise_seed: seed of the sensor noise (None: no noise); give every frame its own seed
        (:func:`frame_noise_seed`), equal seeds put the same noise pattern in every view;
        style: colour image formation (``synth_render.CAMERA`` default, ``LEGACY`` for the old images).
        Returns rgb HxWx3 uint8, depth HxW float32 metres (0 = no hit / beyond 10 m), nyu40 HxW uint8
        (0 = unannotated).
        """
        rgb, depth, nyu, _ = self.render_full(T_world_cam, K, size, noise_seed, style)
        return rgb, depth, nyu

    def gt_mesh(self, max_edge_m: float = GT_MAX_EDGE_M) -> LabeledMesh:
        """Dense ground-truth mesh (data.ply.LabeledMesh): the rendered surfaces tessellated so grid
        edges are <= ``max_edge_m``; per-vertex NYU40 ``label`` (ceiling keeps 22) and the NYU40
        palette colour (ScanNet's *_vh_clean_2.labels.ply convention). World frame, metres."""
        verts, faces, _, vpart = merge_parts(self.layout.parts, max_edge_m)
        labels = self._tables.part_nyu40[vpart].astype(np.int32)
        return LabeledMesh(vertices=verts.astype(np.float32), faces=faces.astype(np.int32),
                           colors=NYU40_PALETTE[labels], labels=labels)


def _supersampled_K(K: np.ndarray, k: int) -> np.ndarray:
    """Intrinsics of the k-times finer image whose k x k pixel blocks average to the pixels of K
    (pixel centres at integers: coarse pixel u covers fine centres k u .. k u + k - 1)."""
    Kf = np.array(K, float)
    Kf[:2] *= k
    Kf[:2, 2] += (k - 1) / 2.0
    return Kf


def frame_noise_seed(scene_seed: int, frame: int) -> int:
    """Sensor-noise seed of frame ``frame`` of scene ``scene_seed`` (distinct per frame)."""
    return int(scene_seed) * 100003 + int(frame)


def build_scene(seed: int, rooms: int = 1) -> SyntheticScene:
    """Generate the scene of ``seed`` with ``rooms`` rooms connected by doorways (deterministic)."""
    if rooms < 1:
        raise DataError(f"rooms must be >= 1, got {rooms}")
    if seed < 0:
        raise DataError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng([seed, rooms])
    return SyntheticScene(seed, build_layout(rng, rooms))


def scene_name(seed: int) -> str:
    """ScanNet-style folder name of scene ``seed``: scene{seed:04d}_00."""
    return f"scene{seed:04d}_00"


def generate_scene(out_dir: str | Path, seed: int, frames: int = 300, size: tuple[int, int] = (480, 640),
                   rooms: int = 1, progress: Callable[[int], None] | None = None, workers: int = 2) -> Path:
    """Write scene ``seed`` in ScanNet's exported layout + .sens + GT mesh under ``out_dir``.

    size: colour (and label-filt) image (height, width); depth is written at 480x640 with its own
    intrinsics (ScanNet's depth camera). Returns the scene folder ``out_dir/scene{seed:04d}_00``.
    progress: called with the number of frames done after each frame (e.g. tqdm.update);
    workers: rendering threads (output does not depend on it).
    """
    if frames < 1:
        raise DataError(f"frames must be >= 1, got {frames}")
    h, w = size
    if h < 8 or w < 8:
        raise DataError(f"image size must be at least 8x8 pixels, got {w}x{h}")
    name = scene_name(seed)
    out = Path(out_dir)
    scene_dir = out / name
    if scene_dir.exists() and not scene_dir.is_dir():
        raise DataError(f"{scene_dir} exists and is not a folder: cannot write scene {name} there")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"output folder {out} is a file or lies under one") from None
    scene = build_scene(seed, rooms)
    poses = camera_path(scene, frames, seed)
    # Written beside the target, then swapped in output by output: a re-run into a folder that holds
    # this scene never mixes old and new frames, and an interrupted run leaves the old scene as it was.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out))
    try:
        _write_scene(tmp, name, scene, poses, seed, size, progress, workers)
        _swap_in(tmp, scene_dir, name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %s (%d frames, %d rooms)", scene_dir, frames, rooms)
    return scene_dir


def scene_outputs(name: str) -> tuple[str, ...]:
    """What generate_scene writes in a scene folder (all of it replaced on a re-run, nothing else)."""
    return ("color", "depth", "pose", "intrinsic", "label-filt", f"{name}.sens", f"{name}{GT_MESH_SUFFIX}",
            LABEL_TSV_NAME)


def _swap_in(tmp: Path, scene_dir: Path, name: str) -> None:
    """Replace the scene's known outputs in ``scene_dir`` by those written in ``tmp``; files that
    are not generate_scene's own are left alone. Old outputs the new run does not have are removed."""
    scene_dir.mkdir(exist_ok=True)
    for item in scene_outputs(name):
        old, new = scene_dir / item, tmp / item
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
        if new.exists():
            os.replace(new, old)


def _write_scene(scene_dir: Path, name: str, scene: SyntheticScene, poses: np.ndarray, seed: int,
                 size: tuple[int, int], progress: Callable[[int], None] | None, workers: int) -> None:
    frames = len(poses)
    K_color = default_intrinsics(size)
    depth_size = DEPTH_SIZE
    K_depth = default_intrinsics(depth_size)
    same = tuple(size) == depth_size

    def render(i: int):
        rgb, depth, _, raw = scene.render_full(poses[i], K_color, size, noise_seed=frame_noise_seed(seed, i))
        if not same:
            depth = scene.render_geometry(poses[i], K_depth, depth_size)[0]
        return rgb, depth, raw

    # frames are independent: render ahead in worker threads (numpy and Open3D release the GIL),
    # write in order in this thread
    with ScanNetWriter(scene_dir, name, K_color, size, K_depth, depth_size, label_tsv=LABEL_TSV) as writer, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque(pool.submit(render, i) for i in range(min(frames, 2 * workers)))
        for i in range(frames):
            rgb, depth, raw = pending.popleft().result()
            if i + len(pending) + 1 < frames:
                pending.append(pool.submit(render, i + len(pending) + 1))
            writer.add(rgb, depth, poses[i], raw)
            if progress is not None:
                progress(1)
    write_labeled_ply(scene_dir / f"{name}{GT_MESH_SUFFIX}", scene.gt_mesh())
