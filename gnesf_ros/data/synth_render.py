"""Raycast rendering of synthetic scenes: depth, labels and shaded colour from Open3D's RaycastingScene.

Camera: pinhole K (pixels) at image size (height, width), pixel centres at integer coordinates;
pose T_world_cam camera-to-world in the optical frame (x right, y down, z forward). Depth is the
z coordinate in the camera frame (metres), as depth sensors report it.
Shading: procedural texture in each object's frame -> albedo; Lambert + Blinn-Phong from the
lights of the room containing the surface point (no light leaks through walls), ambient term,
sRGB gamma, vignetting and sensor noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from gnesf_ros.data import synth_materials as sm

MAX_DEPTH_M = 10.0
SHADOW_LIGHT = 0.25  # fraction of a light that reaches shadowed points (stands in for indirect light)


@dataclass
class RenderTables:
    """Per-triangle / per-part / per-material lookup arrays of a scene (all numpy)."""

    tri_part: np.ndarray  # F int32
    part_nyu40: np.ndarray  # P uint8
    part_raw: np.ndarray  # P uint16
    part_mat: np.ndarray  # P int32
    albedo: np.ndarray  # M x 3 float32
    albedo2: np.ndarray  # M x 3
    texture: np.ndarray  # M int8
    scale: np.ndarray  # M float32
    contrast: np.ndarray  # M float32
    specular: np.ndarray  # M float32
    seed: np.ndarray  # M int64
    R_obj_world: np.ndarray  # M x 3 x 3
    t_obj_world: np.ndarray  # M x 3
    room_boxes: np.ndarray  # R x 4 (x0, y0, x1, y1), layout frame
    T_layout_world: np.ndarray  # 4x4
    lights: np.ndarray  # L x 3 world positions
    light_room: np.ndarray  # L int
    light_rgb: np.ndarray  # 3, intensity of each light
    ambient: float
    packed: np.ndarray | None = None  # 24 x M material attributes (filled by make_tables)


def make_tables(parts, materials, rooms, T_world_layout, tri_part, label_of_raw, rng) -> RenderTables:
    Tm = np.stack([m.T_obj_world for m in materials])
    lights, light_room = [], []
    for i, r in enumerate(rooms):
        for lp in r.lights:
            lights.append(T_world_layout[:3, :3] @ lp + T_world_layout[:3, 3])
            light_room.append(i)
    warm = rng.uniform(-0.03, 0.12)
    tab = RenderTables(
        tri_part=tri_part.astype(np.int32),
        part_nyu40=np.array([label_of_raw[p.raw_id] for p in parts], np.uint8),
        part_raw=np.array([p.raw_id for p in parts], np.uint16),
        part_mat=np.array([p.material for p in parts], np.int32),
        albedo=np.stack([m.albedo for m in materials]).astype(np.float32),
        albedo2=np.stack([m.albedo2 for m in materials]).astype(np.float32),
        texture=np.array([m.texture for m in materials], np.int8),
        scale=np.array([m.scale_m for m in materials], np.float32),
        contrast=np.array([m.contrast for m in materials], np.float32),
        specular=np.array([m.specular for m in materials], np.float32),
        seed=np.array([m.seed for m in materials], np.int64),
        R_obj_world=Tm[:, :3, :3].astype(np.float32), t_obj_world=Tm[:, :3, 3].astype(np.float32),
        room_boxes=np.array([[r.x0, r.y0, r.x1, r.y1] for r in rooms], np.float32),
        T_layout_world=np.linalg.inv(T_world_layout),
        lights=np.array(lights, np.float32).reshape(-1, 3), light_room=np.array(light_room, int),
        light_rgb=np.array([1.0 + warm, 1.0, 1.0 - warm], np.float32) * rng.uniform(1.6, 2.4),
        ambient=float(rng.uniform(0.3, 0.45)),
    )
    tab.packed = _pack(tab)
    return tab


def camera_rays(T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H x W x 6 float32 rays (origin, direction) with direction z_cam = 1, so t_hit is z-depth."""
    h, w = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d_world = d_cam @ T_world_cam[:3, :3].T
    rays = np.empty((h, w, 6), np.float32)
    rays[..., :3] = T_world_cam[:3, 3]
    rays[..., 3:] = d_world
    return rays


def raycast(scene: o3d.t.geometry.RaycastingScene, T_world_cam, K, size):
    """(rays HxWx6, depth HxW float32 (0 = no hit / beyond MAX_DEPTH_M), triangle ids HxW int64 (-1 none),
    normals HxWx3 float32 world)."""
    rays = camera_rays(T_world_cam, K, size)
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    t = ans["t_hit"].numpy()
    tri = ans["primitive_ids"].numpy().astype(np.int64)
    hit = np.isfinite(t) & (t <= MAX_DEPTH_M) & (t > 0)
    depth = np.where(hit, t, 0).astype(np.float32)
    tri = np.where(hit, tri, -1)
    return rays, depth, tri, ans["primitive_normals"].numpy()


_LATTICE_BITS = 6  # periodic noise lattice of 64^3 random values (fast table lookups instead of hashing)
_LATTICE = np.random.default_rng(12345).random(1 << (3 * _LATTICE_BITS)).astype(np.float32)
_MASK = (1 << _LATTICE_BITS) - 1


def _hash(ix, iy, iz, seed):
    """Pseudo-random value in [0, 1] per integer lattice point (and seed)."""
    s = np.asarray(seed, np.int64)
    return _LATTICE[(((ix + s) & _MASK) << (2 * _LATTICE_BITS)) | (((iy + s * 7) & _MASK) << _LATTICE_BITS)
                    | ((iz + s * 13) & _MASK)]


def value_noise(p: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] at points p (N x 3, lattice units); period 64 lattice units."""
    i = np.floor(p)
    f = (p - i).astype(np.float32)
    f = f * f * (3 - 2 * f)
    i = i.astype(np.int64)
    s = np.asarray(seed, np.int64)
    x0, y0, z0 = (i[:, 0] + s) & _MASK, (i[:, 1] + s * 7) & _MASK, (i[:, 2] + s * 13) & _MASK
    x1, y1, z1 = (x0 + 1) & _MASK, (y0 + 1) & _MASK, (z0 + 1) & _MASK
    sh = _LATTICE_BITS
    xs = (x0 << (2 * sh), x1 << (2 * sh))
    ys = (y0 << sh, y1 << sh)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    out = None
    for dx in (0, 1):
        for dy in (0, 1):
            base = xs[dx] | ys[dy]
            v = _LATTICE[base | z0]
            v += (_LATTICE[base | z1] - v) * fz
            w = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
            out = v * w if out is None else out + v * w
    return out


# Rows of the packed per-material table (RenderTables.packed, 24 x M float32).
_R, _T, _A1, _A2, _SCALE, _CONTRAST, _SPEC, _SEED, _KIND = 0, 9, 12, 15, 18, 19, 20, 21, 22


def _pack(tab: RenderTables) -> np.ndarray:
    m = len(tab.albedo)
    out = np.zeros((24, m), np.float32)
    out[_R:_R + 9] = tab.R_obj_world.reshape(m, 9).T
    out[_T:_T + 3] = tab.t_obj_world.T
    out[_A1:_A1 + 3] = tab.albedo.T
    out[_A2:_A2 + 3] = tab.albedo2.T
    out[_SCALE], out[_CONTRAST], out[_SPEC] = tab.scale, tab.contrast, tab.specular
    out[_SEED], out[_KIND] = tab.seed % 4096, tab.texture
    return out


def albedo_at(tab: RenderTables, mat: np.ndarray, p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Textured albedo (3 x N float32) and emissive mask (N) at world points p (3 x N) with normals n (3 x N)."""
    g = np.take(tab.packed, mat, axis=1)  # 24 x N attributes of each point's material
    R = g[_R:_R + 9]
    q = np.stack([R[3 * i] * p[0] + R[3 * i + 1] * p[1] + R[3 * i + 2] * p[2] + g[_T + i] for i in range(3)])
    nl = np.stack([np.abs(R[3 * i] * n[0] + R[3 * i + 1] * n[1] + R[3 * i + 2] * n[2]) for i in range(3)])
    # tangent coordinates: drop the local axis closest to the normal (x before y before z kept)
    k = np.argmax(nl, 0)
    u = np.where(k == 0, q[1], q[0])
    v = np.where(k == 2, q[1], q[2])
    kind = g[_KIND].astype(np.int8)
    s, c, seed = g[_SCALE], g[_CONTRAST], g[_SEED].astype(np.int64)
    npx = p.shape[1]
    m = np.zeros(npx, np.float32)  # mix factor albedo -> albedo2
    tint = np.ones(npx, np.float32)

    def pts(sel, scale, *cols):
        return np.stack([col[sel] for col in cols], 1) / scale

    sel = np.flatnonzero(kind == sm.PLAIN)
    if len(sel):
        m[sel] = c[sel] * value_noise(pts(sel, 0.25, q[0], q[1], q[2]), seed[sel])
    sel = np.flatnonzero(kind == sm.STONE)
    if len(sel):
        qs = pts(sel, s[sel, None], q[0], q[1], q[2])
        m[sel] = c[sel] * value_noise(qs, seed[sel])
        fine = c[sel] > 0.2
        if fine.any():
            sf = sel[fine]
            m[sf] = 0.6 * m[sf] + 0.4 * c[sf] * value_noise(qs[fine] * 3.1, seed[sf] + 7)
    sel = np.flatnonzero((kind == sm.WOOD) | (kind == sm.PLANKS))
    if len(sel):
        planks = kind[sel] == sm.PLANKS
        width = np.where(planks, s[sel], 1e9)
        vs, us, zs = v[sel], u[sel], q[2][sel]
        row = np.floor(vs / width).astype(np.int64)
        along = us + _hash(row, 0, 0, seed[sel]) * 2.0
        grain = np.where(planks, 0.008, s[sel])
        warp = value_noise(np.stack([along * 1.5, vs * 12, zs * 3], 1), seed[sel]) * 2.5
        ring = 0.5 + 0.5 * np.sin(2 * np.pi * ((vs + 0.3 * zs) / grain / 6 + warp))
        m[sel] = c[sel] * ring * ring
        joint = planks & ((np.abs(vs / width - np.round(vs / width)) * width < 0.003)
                          | (np.abs(along / 1.2 - np.round(along / 1.2)) * 1.2 < 0.003))
        tint[sel] = np.where(planks, 0.85 + 0.3 * _hash(row, 1, 0, seed[sel]), 1.0) * np.where(joint, 0.45, 1.0)
    sel = np.flatnonzero(kind == sm.TILES)
    if len(sel):
        us, vs = u[sel] / s[sel], v[sel] / s[sel]
        fu, fv = us - np.floor(us), vs - np.floor(vs)
        grout = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) * s[sel] < 0.004
        tile = _hash(np.floor(us).astype(np.int64), np.floor(vs).astype(np.int64), 0, seed[sel])
        m[sel] = np.where(grout, 1.0, c[sel] * 0.3 * tile)
    sel = np.flatnonzero(kind == sm.FABRIC)
    if len(sel):
        weave = 0.5 + 0.5 * np.sin(2 * np.pi * u[sel] / s[sel]) * np.sin(2 * np.pi * v[sel] / s[sel])
        mott = value_noise(pts(sel, 0.15, q[0], q[1], q[2]), seed[sel])
        m[sel] = c[sel] * (0.5 * weave + 0.5 * mott)
    sel = np.flatnonzero(kind == sm.PICTURE)
    if len(sel):  # blobs, stripes and blocks: a different "image" per seed
        us, vs, sd = u[sel] / s[sel], v[sel] / s[sel], seed[sel]
        qs = np.stack([us, vs, np.zeros(len(sel), np.float32)], 1)
        blobs = np.clip((value_noise(qs, sd) - 0.5) * 3 + 0.5, 0, 1)
        stripes = (np.sin(2 * np.pi * (us * 1.7 + 0.6 * vs)) > 0).astype(np.float32)
        blocks = _hash(np.floor(us * 0.8).astype(np.int64), np.floor(vs * 1.3).astype(np.int64), 0, sd)
        style = sd % 3
        m[sel] = np.where(style == 0, blobs, np.where(style == 1, 0.7 * stripes + 0.3 * blobs, blocks))
        tint[sel] = 0.55 + 0.9 * value_noise(qs * 2.3 + 5.0, sd + 3)
    emissive = kind == sm.SKY
    sel = np.flatnonzero(emissive)
    if len(sel):
        qs = pts(sel, 1.0, q[0] * 2, q[1] * 2, q[2] * 6)
        m[sel] = np.clip(0.5 + 0.5 * value_noise(qs, seed[sel]) - 0.25 * q[2][sel], 0, 1)
    col = (g[_A1:_A1 + 3] * (1 - m) + g[_A2:_A2 + 3] * m) * tint
    return np.clip(col, 0, 1), emissive


def shade(tab: RenderTables, rays, depth, tri, normals, noise_seed: int | None = 0,
          occluder: o3d.t.geometry.RaycastingScene | None = None) -> np.ndarray:
    """H x W x 3 uint8 colour image of a raycast; with ``occluder`` (the scene) lights cast shadows."""
    h, w = depth.shape
    img = np.zeros((3, h * w), np.float32)
    idx = np.flatnonzero(tri.reshape(-1) >= 0)
    if len(idx):
        d = np.ascontiguousarray(rays.reshape(-1, 6)[idx, 3:].T)  # 3 x N
        o = rays.reshape(-1, 6)[0, :3]
        t = depth.reshape(-1)[idx]
        p = o[:, None] + d * t
        n = np.ascontiguousarray(normals.reshape(-1, 3)[idx].T)
        n *= np.where((n * d).sum(0) > 0, -1.0, 1.0).astype(np.float32)
        mat = tab.part_mat[tab.tri_part[tri.reshape(-1)[idx]]]
        alb, emissive = albedo_at(tab, mat, p, n)
        # room of each point (layout frame), so lights do not shine through walls
        A = tab.T_layout_world.astype(np.float32)
        lx = A[0, 0] * p[0] + A[0, 1] * p[1] + A[0, 2] * p[2] + A[0, 3]
        ly = A[1, 0] * p[0] + A[1, 1] * p[1] + A[1, 2] * p[2] + A[1, 3]
        room = np.full(len(idx), -1, np.int32)
        for i, (x0, y0, x1, y1) in enumerate(tab.room_boxes):
            inside = (lx > x0 - 0.1) & (lx < x1 + 0.1) & (ly > y0 - 0.1) & (ly < y1 + 0.1) & (room < 0)
            room[inside] = i
        light = np.full(len(idx), tab.ambient, np.float32)
        spec = np.zeros(len(idx), np.float32)
        view = -d / np.sqrt((d * d).sum(0))
        ks = tab.packed[_SPEC][mat]
        for lp, lr in zip(tab.lights, tab.light_room):
            L = lp[:, None] - p
            d2 = (L * L).sum(0)
            L *= 1.0 / np.sqrt(d2)
            in_room = room == lr
            att = in_room / (1.0 + d2 / 6.25)
            if occluder is not None:
                att *= _shadow(occluder, p, n, lp, in_room, idx, h, w)
            light += att * np.clip((n * L).sum(0), 0, None)
            hv = L + view
            ndh = np.clip((n * hv).sum(0) / np.sqrt((hv * hv).sum(0) + 1e-12), 0, None)
            ndh *= ndh  # ^2
            ndh *= ndh  # ^4
            ndh *= ndh  # ^8
            spec += att * ks * ndh * ndh * ndh * ndh * ndh  # ^40
        col = alb * (light * 0.55) * tab.light_rgb[:, None] + spec * 0.5
        img[:, idx] = np.where(emissive, alb, col)
    img = img.T.reshape(h, w, 3)
    img *= _vignette(h, w)[..., None]
    code = (np.clip(img, 0, 1) * (len(_SRGB) - 1)).astype(np.int32)
    if noise_seed is None:
        return _SRGB[code].astype(np.uint8)
    noise = np.random.default_rng(noise_seed).standard_normal(img.shape, dtype=np.float32) * 2.0
    return np.clip(_SRGB[code] + noise, 0, 255).astype(np.uint8)


_SRGB = np.round(255 * np.linspace(0, 1, 4096, dtype=np.float32) ** (1 / 2.2)).astype(np.float32)  # gamma LUT


def _shadow(occluder, p, n, lp, in_room, idx, h, w) -> np.ndarray:
    """Light factor (N) per hit point: SHADOW_LIGHT where the segment to the light is blocked.

    Shadow rays are cast from every second pixel in x and y (a quarter of the rays) and spread to
    the 2x2 block: shadow edges are 2 px coarse, which is invisible at 640x480 and 4x cheaper."""
    rows, cols = idx // w, idx % w
    sample = (rows % 2 == 0) & (cols % 2 == 0) & in_room
    sel = np.flatnonzero(sample)
    rays = np.empty((len(sel), 6), np.float32)
    rays[:, :3] = (p[:, sel] + n[:, sel] * 0.003).T  # nudged off the surface
    rays[:, 3:] = (lp[:, None] - p[:, sel]).T
    occ = occluder.test_occlusions(o3d.core.Tensor(rays), tnear=0.0, tfar=0.995).numpy()
    grid = np.zeros(((h + 1) // 2, (w + 1) // 2), bool)
    grid[rows[sel] // 2, cols[sel] // 2] = occ
    blocked = grid[rows // 2, cols // 2] & in_room
    return np.where(blocked, SHADOW_LIGHT, 1.0).astype(np.float32)


def _vignette(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    return 1.0 - 0.18 * r2
