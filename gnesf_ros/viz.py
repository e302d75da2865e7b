"""Headless pictures: raycast mesh renders, overview images with a class legend, frame contact sheets.

No OpenGL window: meshes are raycast with ``open3d.t.geometry.RaycastingScene``; the hit
triangle's vertex colours are interpolated with the barycentric coordinates (or, for class
colours, the nearest corner's class is taken so that boundaries stay crisp) and Lambert-shaded
with a head light. Images are RGB uint8, sizes (height, width), poses T_world_cam (camera-to-world,
optical frame: x right, y down, z forward), K 3x3 pixels with OpenCV's pixel-centre convention.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from gnesf_ros.classes import IGNORE, ClassTable, default_class_table
from gnesf_ros.data.ply import LabeledMesh
from gnesf_ros.types import Frame

UNKNOWN_COLOR = (150, 150, 150)  # vertices / pixels outside the class table
BACKGROUND = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class MeshRenderer:
    """Raycasts one mesh repeatedly (the BVH is built once).

    color_by: "colors" (the mesh's per-vertex RGB, interpolated) or "labels" (class colours of the
    per-vertex NYU40 labels through ``table``; unknown -> UNKNOWN_COLOR)."""

    def __init__(self, mesh: LabeledMesh, color_by: str = "colors", table: ClassTable | None = None,
                 ambient: float = 0.35, background: Sequence[int] = BACKGROUND) -> None:
        if color_by not in ("colors", "labels"):
            raise ValueError(f"color_by must be 'colors' or 'labels', got {color_by!r}")
        self.mesh = mesh
        self.ambient = float(ambient)
        self.background = np.asarray(background, np.float32)
        self.crisp = color_by == "labels"
        if self.crisp:
            table = table or default_class_table()
            idx = table.nyu40_to_index_lut()[np.clip(mesh.labels, 0, 255)]
            self.vertex_colors = table.colorize(idx, ignore_color=UNKNOWN_COLOR).astype(np.float32)
        else:
            self.vertex_colors = mesh.colors.astype(np.float32)
        import open3d as o3d  # lazy: importing open3d takes seconds; contact sheets do not need it

        self._o3d = o3d
        self.scene = o3d.t.geometry.RaycastingScene()
        if mesh.num_faces:
            self.scene.add_triangles(o3d.core.Tensor(mesh.vertices, o3d.core.float32),
                                     o3d.core.Tensor(mesh.faces.astype(np.uint32), o3d.core.uint32))

    def cast(self, origins: np.ndarray, dirs: np.ndarray, cull: int = 0, max_layers: int = 4) -> dict:
        """First hits of rays (...x3 each, flattened) -> {"t": N (inf = miss; in units of |dir|),
        "prim": N triangle ids, "uv": Nx2 barycentrics, "normal": Nx3 unit triangle normals}.

        cull: 0 two-sided; +1 skips faces whose normal points away from the ray origin (back faces
        of a mesh whose normals face free space), -1 the opposite; a skipped hit continues the ray
        behind it, up to ``max_layers`` surfaces."""
        o = origins.reshape(-1, 3).astype(np.float32)
        d = dirs.reshape(-1, 3).astype(np.float32)
        n = len(o)
        out = {"t": np.full(n, np.inf, np.float32), "prim": np.zeros(n, np.int64),
               "uv": np.zeros((n, 2), np.float32), "normal": np.zeros((n, 3), np.float32)}
        if self.mesh.num_faces == 0:
            return out
        travelled = np.zeros(n, np.float32)
        active = np.arange(n)
        for _ in range(max_layers if cull else 1):
            ans = self.scene.cast_rays(self._o3d.core.Tensor(np.concatenate([o[active], d[active]], 1)))
            t, normal = ans["t_hit"].numpy(), ans["primitive_normals"].numpy()
            hit = np.isfinite(t)
            back = hit & (cull * np.sum(normal * d[active], 1) > 0)
            done = hit & ~back
            idx = active[done]
            out["t"][idx] = travelled[idx] + t[done]
            out["prim"][idx] = ans["primitive_ids"].numpy()[done]
            out["uv"][idx] = ans["primitive_uvs"].numpy()[done]
            out["normal"][idx] = normal[done]
            active = active[back]
            if not len(active):
                break
            step = t[back] + 1e-4 / np.linalg.norm(d[active], axis=1)  # just behind the skipped face
            o[active] += step[:, None] * d[active]
            travelled[active] += step
        return out

    def shade(self, hits: dict, dirs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Colour cast() results: barycentric vertex colours x Lambert head light -> shape x 3 uint8."""
        rgb = np.broadcast_to(self.background, (int(np.prod(shape)), 3)).copy()
        hit = np.isfinite(hits["t"])
        prim, uv, normal = hits["prim"][hit], hits["uv"][hit], hits["normal"][hit]
        bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1)  # weights of corners 0, 1, 2
        corners = self.mesh.faces[prim]  # n x 3 vertex ids
        if self.crisp:
            color = self.vertex_colors[corners[np.arange(len(prim)), bary.argmax(1)]]
        else:
            color = np.einsum("nk,nkc->nc", bary, self.vertex_colors[corners])
        d = dirs.reshape(-1, 3)[hit]
        lambert = np.abs(np.sum(normal * d, 1)) / np.linalg.norm(d, axis=1)  # head light; two-sided
        rgb[hit] = color * (self.ambient + (1.0 - self.ambient) * lambert)[:, None]
        return np.clip(rgb, 0, 255).astype(np.uint8).reshape(*shape, 3)

    def render_rays(self, origins: np.ndarray, dirs: np.ndarray, cull: int = 0) -> np.ndarray:
        """origins, dirs: ...x3 world rays (dirs need not be unit) -> ...x3 uint8 RGB."""
        return self.shade(self.cast(origins, dirs, cull), dirs, origins.shape[:-1])

    def render(self, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Pinhole view -> HxWx3 uint8 RGB (background where no surface is hit)."""
        origins, dirs = pinhole_rays(T_world_cam, K, size)
        return self.render_rays(origins, dirs)


def pinhole_rays(T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """World rays through every pixel: (origins HxWx3, dirs HxWx3 with camera-z component 1)."""
    h, w = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pix = np.stack([u, v, np.ones_like(u)], -1)
    d_cam = pix @ np.linalg.inv(np.asarray(K, np.float64)).T
    T = np.asarray(T_world_cam, np.float64)
    dirs = d_cam @ T[:3, :3].T
    return np.broadcast_to(T[:3, 3], dirs.shape).copy(), dirs


def render_mesh(mesh: LabeledMesh, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int],
                color_by: str = "colors", table: ClassTable | None = None) -> np.ndarray:
    """Render ``mesh`` seen from camera ``T_world_cam`` (4x4) with intrinsics K at size (h, w).
    -> HxWx3 uint8 RGB, white background. See MeshRenderer for ``color_by``."""
    return MeshRenderer(mesh, color_by, table).render(T_world_cam, K, size)


def _basis(up: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit up vector and two horizontal unit axes (a, b) with a x b = up."""
    up = np.asarray(up, np.float64)
    up = up / np.linalg.norm(up)
    a = np.eye(3)[np.argmin(np.abs(up))]
    a = a - up * (a @ up)
    a /= np.linalg.norm(a)
    return up, a, np.cross(up, a)


def _clip_to_height(origins: np.ndarray, dirs: np.ndarray, up: np.ndarray, cut: float | None):
    """Start every ray where it enters the half-space below height ``cut`` (a doll-house cut that
    removes ceilings); rays that never enter it get a NaN origin (no hit)."""
    if cut is None:
        return origins, dirs
    h0 = origins @ up
    dh = dirs @ up
    above = h0 > cut
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(above & (dh < 0), (cut - h0) / dh, 0.0)
    origins = origins + t[..., None] * dirs
    origins[above & (dh >= 0)] = np.nan
    return origins, dirs


def overview_images(mesh: LabeledMesh, table: ClassTable | None = None, up: Sequence[float] = (0, 0, 1),
                    size: tuple[int, int] = (480, 640), cut_height_m: float | None = 2.0,
                    color_by: str = "labels", legend: bool = True,
                    elevation_deg: float = 55.0, cull_backfaces: bool = True) -> dict[str, np.ndarray]:
    """Two automatically framed views of a mesh -> {"top_down": rgb, "perspective": rgb}.

    up: the gravity axis (world frame; +z for ScanNet and the synthetic scenes); nothing else about
    the world frame is assumed. The horizontal axes follow the minimum-area rectangle around the
    mesh, long side across the image. "top_down": orthographic view along -up. "perspective":
    60-degree vertical field of view from ``elevation_deg`` above the horizon, from the side that is
    at the bottom of the top-down image, at the distance where the oriented bounding box just fits.
    cut_height_m: surfaces more than this above the floor (1st percentile of vertex heights) are
    cut away so ceilings do not hide the room; None keeps everything. With ``legend`` each image
    gets a panel listing the classes present in the mesh. cull_backfaces: in the perspective view,
    see through faces seen from behind (e.g. the outside of the nearest wall), when the floor seen
    from above tells which side of the faces is the front; meshes without consistent orientation
    are drawn two-sided."""
    table = table or default_class_table()
    h, w = size
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    r = MeshRenderer(mesh, color_by, table)
    v = mesh.vertices.astype(np.float64) if mesh.num_vertices else np.zeros((1, 3))
    heights = v @ up
    cut = None if cut_height_m is None else float(np.percentile(heights, 1)) + cut_height_m
    keep = v if cut is None else v[heights <= cut]
    keep = keep if len(keep) else v
    a, b = _horizontal_axes(keep, up, landscape=w >= h)
    box = np.stack([keep @ a, keep @ b, keep @ up], 1)
    lo, hi = box.min(0), box.max(0)
    mid = (lo + hi) / 2
    target = mid[0] * a + mid[1] * b + mid[2] * up
    # Top-down: image x = a, image y (down) = -b, so that (x, y, -up) is right-handed (no mirroring).
    pix = max((hi[0] - lo[0]) / (0.92 * w), (hi[1] - lo[1]) / (0.92 * h), 1e-6)
    u, vv = np.meshgrid(np.arange(w) - (w - 1) / 2, np.arange(h) - (h - 1) / 2)
    origins = (target + (heights.max() - mid[2] + 1.0) * up
               + pix * (u[..., None] * a - vv[..., None] * b))
    rays = _clip_to_height(origins, np.broadcast_to(-up, origins.shape), up, cut)
    hits = r.cast(*rays)
    top = r.shade(hits, rays[1], (h, w))
    # Perspective from the -b side, slightly to the +a side.
    elev = np.deg2rad(elevation_deg)
    side = (0.35 * a - b) / np.linalg.norm(0.35 * a - b)
    view = np.cos(elev) * side + np.sin(elev) * up
    f = 0.5 * h / np.tan(np.deg2rad(30.0))
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    corners = corners @ np.stack([a, b, up])
    R = look_at(target + view, target, up)[:3, :3]
    T = look_at(target + _fit_distance(corners - target, R, K, size) * view, target, up)
    cull = _free_space_side(hits, up) if cull_backfaces else 0
    persp = r.render_rays(*_clip_to_height(*pinhole_rays(T, K, size), up, cut), cull=cull)
    out = {"top_down": top, "perspective": persp}
    if legend:
        panel = legend_panel(mesh_classes(mesh, table), table, h)
        out = {k: np.concatenate([img, panel], 1) for k, img in out.items()}
    return out


def _free_space_side(top_hits: dict, up: np.ndarray) -> int:
    """Cull sign for MeshRenderer.cast, read from the floor seen from above (the 20% farthest hits
    of the top-down rays): +1 when its normals point up (normals face free space, as in ScanNet and
    marching-cubes meshes), -1 when they point down, 0 when they disagree (inconsistent winding)."""
    t = top_hits["t"]
    hit = np.isfinite(t)
    if not hit.any():
        return 0
    floor = t[hit] >= np.percentile(t[hit], 80)
    vote = float(np.mean(np.sign(top_hits["normal"][hit][floor] @ up)))
    return 1 if vote > 0.8 else -1 if vote < -0.8 else 0


def _horizontal_axes(points: np.ndarray, up: np.ndarray, landscape: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal unit axes (a, b), b = up x a, along the sides of the minimum-area rectangle around
    the points seen from above; a along the longer side when ``landscape``."""
    _, a, b = _basis(up)
    xy = np.stack([points @ a, points @ b], 1).astype(np.float32)
    (_, _), (_, _), angle = cv2.minAreaRect(xy)
    t = np.deg2rad(angle)
    a1 = np.cos(t) * a + np.sin(t) * b
    b1 = np.cross(up, a1)
    if (np.ptp(points @ a1) < np.ptp(points @ b1)) == landscape:
        a1, b1 = b1, np.cross(up, b1)
    return a1, b1


def _fit_distance(corners: np.ndarray, R: np.ndarray, K: np.ndarray, size: tuple[int, int],
                  fill: float = 0.95) -> float:
    """Distance along the viewing axis at which all ``corners`` (Nx3, relative to the look-at
    target) project inside ``fill`` of the image of a camera with rotation R (world from camera)."""
    h, w = size
    c = corners @ R  # camera-frame coordinates when the camera sits at the target
    tx, ty = fill * (w / 2) / K[0, 0], fill * (h / 2) / K[1, 1]
    need = np.maximum(np.abs(c[:, 0]) / tx, np.abs(c[:, 1]) / ty) - c[:, 2]
    return float(max(need.max(), (-c[:, 2]).max() + 1e-2, 1e-2))


def overview_sheet(mesh: LabeledMesh, table: ClassTable | None = None, **kwargs) -> np.ndarray:
    """Top-down | perspective | legend in one RGB image (kwargs as overview_images)."""
    table = table or default_class_table()
    views = overview_images(mesh, table, legend=False, **kwargs)
    h = views["top_down"].shape[0]
    return np.concatenate([views["top_down"], views["perspective"],
                           legend_panel(mesh_classes(mesh, table), table, h)], 1)


def look_at(eye: np.ndarray, target: np.ndarray, up: Sequence[float] = (0, 0, 1)) -> np.ndarray:
    """T_world_cam (optical frame) of a camera at ``eye`` looking at ``target`` with ``up`` upward."""
    z = np.asarray(target, np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, np.float64))
    if np.linalg.norm(x) < 1e-9:  # looking along up: any horizontal x will do
        x = np.cross(z, np.eye(3)[np.argmin(np.abs(z))])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, np.cross(z, x), z, eye
    return T


def mesh_classes(mesh: LabeledMesh, table: ClassTable) -> list[int]:
    """Class indices present among the mesh's vertex labels, in table order."""
    idx = table.nyu40_to_index_lut()[np.clip(mesh.labels, 0, 255)]
    return [int(c) for c in np.unique(idx) if c != IGNORE]


def legend_panel(classes: Sequence[int], table: ClassTable, height: int, width: int = 170) -> np.ndarray:
    """White HxW panel listing ``classes`` (indices) with their colour swatch and name."""
    panel = np.full((height, width, 3), 255, np.uint8)
    if not classes:
        return panel
    row = max(min(24, height // (len(classes) + 1)), 8)
    scale = 0.45 * row / 24
    for i, c in enumerate(classes):
        y = 8 + i * row
        if y + row > height:
            break
        cv2.rectangle(panel, (8, y + 2), (8 + row - 6, y + row - 4), table.colors[c].tolist(), -1)
        cv2.rectangle(panel, (8, y + 2), (8 + row - 6, y + row - 4), (60, 60, 60), 1)
        cv2.putText(panel, table.names[c], (row + 8, y + row - 8), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def colorize_depth(depth_m: np.ndarray, max_m: float, min_m: float = 0.0) -> np.ndarray:
    """HxW metres (0 = invalid) -> HxWx3 uint8 RGB (turbo colour map from min_m blue to max_m red,
    invalid black)."""
    d = np.clip((np.nan_to_num(depth_m) - min_m) / max(max_m - min_m, 1e-6), 0, 1)
    rgb = cv2.applyColorMap((d * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    rgb = np.ascontiguousarray(rgb)
    rgb[~(depth_m > 0)] = 0
    return rgb


def _placeholder(size: tuple[int, int], text: str) -> np.ndarray:
    img = np.full(size + (3,), 200, np.uint8)
    cv2.putText(img, text, (8, size[0] // 2), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _corner_label(img: np.ndarray, text: str) -> None:
    """Black text outlined in white at the top-left corner, readable on any panel (in place)."""
    cv2.putText(img, text, (6, 18), _FONT, 0.5, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.putText(img, text, (6, 18), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)


def contact_sheet(frames: Sequence[Frame], table: ClassTable | None = None,
                  depth_range_m: tuple[float, float] | None = None,
                  predictions: Sequence[np.ndarray] | None = None, predictor: str = "prediction") -> np.ndarray:
    """One row per frame: RGB | depth (turbo over depth_range_m, black invalid) | class colours
    (ignore black) [| predicted class colours], with a legend of the classes present. All panels take
    the first frame's size. depth_range_m: (near, far) metres; None = 1st..99th percentile of the valid
    depths of all frames. predictions: one H x W class-index image per frame (e.g. a segmenter's argmax),
    titled ``predictor``; where the frame has labels, its pixel accuracy is written on the panel."""
    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    table = table or default_class_table()
    h, w = frames[0].size
    if depth_range_m is None:
        valid = [f.depth[f.depth > 0] for f in frames if f.depth is not None]
        valid = np.concatenate(valid) if valid else np.zeros(0)
        depth_range_m = tuple(np.percentile(valid, [1, 99])) if valid.size else (0.0, 1.0)
    near, far = (float(x) for x in depth_range_m)

    def fit(img: np.ndarray, nearest: bool = False) -> np.ndarray:
        if img.shape[:2] == (h, w):
            return img
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)

    rows, present = [], set()
    for f in frames:
        rgb = np.ascontiguousarray(fit(f.rgb))
        _corner_label(rgb, f"#{f.index}")
        depth = (colorize_depth(fit(f.depth.astype(np.float32), True), far, near)
                 if f.depth is not None else _placeholder((h, w), "no depth"))
        if f.labels is not None:
            lab = fit(f.labels.astype(np.uint8), True)
            present.update(int(c) for c in np.unique(lab) if c < table.num_classes)
            labels = table.colorize(lab)
        else:
            labels = _placeholder((h, w), "no labels")
        panels = [rgb, depth, labels]
        if predictions is not None:
            pred = fit(np.asarray(predictions[len(rows)], np.uint8), True)
            present.update(int(c) for c in np.unique(pred) if c < table.num_classes)
            panel = np.ascontiguousarray(table.colorize(pred))
            if f.labels is not None and (lab < table.num_classes).any():
                valid = lab < table.num_classes
                _corner_label(panel, f"acc {100 * (pred[valid] == lab[valid]).mean():.0f}%")
            panels.append(panel)
        rows.append(np.concatenate(panels, 1))
    titles = ("RGB", f"depth {near:.1f}-{far:.1f} m", "labels") + ((predictor,) if predictions is not None else ())
    header = np.full((24, len(titles) * w, 3), 255, np.uint8)
    for i, title in enumerate(titles):
        cv2.putText(header, title, (i * w + 6, 17), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    sheet = np.concatenate([header] + rows, 0)
    return np.concatenate([sheet, legend_panel(sorted(present), table, sheet.shape[0])], 1)


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (creates the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"could not write image {path}")
