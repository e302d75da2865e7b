"""Raycast rendering of synthetic scenes: depth, labels and shaded colour from Open3D's RaycastingScene.

Camera: pinhole K (pixels) at image size (height, width), pixel centres at integer coordinates;
pose T_world_cam camera-to-world in the optical frame (x right, y down, z forward). Depth is the
z coordinate in the camera frame (metres), as depth sensors report it.
Shading: procedural texture in each object's frame -> albedo; Lambert + Blinn-Phong from the
lights of the room containing the surface point (no light leaks through walls), ambient term,
sRGB gamma, optional vignetting and sensor noise.

``RenderStyle`` selects how camera-like the images are: ``CAMERA`` (default) has no vignette,
fades procedural detail finer than ~2 pixel footprints (one ray per pixel would alias it) and adds
mid-frequency detail to walls, floors and ceilings (roller unevenness, stains, skirting boards,
sockets/switches); ``LEGACY`` reproduces the images of the first generator (before/after
measurements); ``CAMERA_SS2`` additionally shades 2x2 rays per pixel (about 4x the cost).
Geometry, labels and depth never depend on the style.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from gnesf_ros.data import synth_materials as sm

MAX_DEPTH_M = 10.0
NYU_WALL, NYU_FLOOR, NYU_CEILING = 1, 2, 22


@dataclass(frozen=True)
class RenderStyle:
    """How the colour image is formed (never the geometry or labels).

    vignette: linear-light falloff k in ``1 - k r^2`` (r = 1 at the mid-edges; 0 = off);
    antialias: fade texture detail whose period is below ~2 pixel footprints;
    wall_detail: mid-frequency detail on walls, floors and ceilings (unevenness, stains, skirting
    boards, sockets/switches);
    supersample: rays per pixel along each axis (box-filtered in linear light before gamma/noise);
    full_shadows: one shadow ray per pixel (else per 2x2 block, whose edges snap to the grid);
    auto_exposure: scale linear light by a per-scene exposure (fixed for the whole scan, like a
    camera whose auto exposure locks at the start) so that bright walls do not clip to white.
    """

    vignette: float = 0.0
    antialias: bool = True
    wall_detail: bool = True
    supersample: int = 1
    auto_exposure: bool = True
    full_shadows: bool = True


LEGACY = RenderStyle(vignette=0.18, antialias=False, wall_detail=False, auto_exposure=False, full_shadows=False)
CAMERA = RenderStyle()
CAMERA_SS2 = RenderStyle(supersample=2)
STYLES: dict[str, RenderStyle] = {"legacy": LEGACY, "camera": CAMERA, "camera_ss2": CAMERA_SS2}
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


def _fade(period_m: float | np.ndarray, footprint: np.ndarray | None) -> np.ndarray | float:
    """Weight (0..1) of texture detail of ``period_m`` (metres) seen with pixel ``footprint``
    (metres): 1 above 4 footprints, 0 below 2 (detail that one ray per pixel would alias is
    replaced by its mean), linear between. ``footprint`` None: no fading (weight 1)."""
    if footprint is None:
        return 1.0
    return np.clip(np.asarray(period_m, np.float32) / footprint * 0.5 - 1.0, 0.0, 1.0)


def _line_cover(dist_m: np.ndarray, half_width_m: float, footprint: np.ndarray | None) -> np.ndarray:
    """Share (0..1) of a pixel covered by a line of ``half_width_m`` at distance ``dist_m`` from
    its centre (metres); a box filter of the pixel footprint when given, else a hard edge."""
    if footprint is None:
        return (dist_m < half_width_m).astype(np.float32)
    lo, hi = dist_m - footprint * 0.5, dist_m + footprint * 0.5
    overlap = np.clip(np.minimum(hi, half_width_m) - np.maximum(lo, -half_width_m), 0, None)
    return (overlap / footprint).astype(np.float32)


def _box_cover(a: np.ndarray, b: np.ndarray, half_a: float, half_b: float,
               footprint: np.ndarray | None) -> np.ndarray:
    """Share (0..1) of a pixel covered by the rectangle |a| <= half_a, |b| <= half_b (metres)."""
    if footprint is None:
        return ((np.abs(a) <= half_a) & (np.abs(b) <= half_b)).astype(np.float32)
    fp = footprint
    return (np.clip((half_a - np.abs(a)) / fp + 0.5, 0, 1) * np.clip((half_b - np.abs(b)) / fp + 0.5, 0, 1)
            ).astype(np.float32)


def albedo_at(tab: RenderTables, mat: np.ndarray, p: np.ndarray, n: np.ndarray,
              footprint: np.ndarray | None = None, surface: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Textured albedo (3 x N float32, linear) and emissive mask (N) at world points p (3 x N,
    metres) with unit normals n (3 x N, facing the camera).

    footprint: pixel footprint on the surface (N, metres) to anti-alias texture detail (None: no
    fading, one point sample as the legacy renderer); surface: NYU40 id per point (N) to add the
    wall / floor / ceiling detail (None: none)."""
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

    def fp(sel):
        return None if footprint is None else footprint[sel]

    def faded(x, mean, period, sel):
        """x where its period is resolved, its mean where it would alias."""
        if footprint is None:
            return x  # bit-exact legacy images
        return mean + _fade(period, fp(sel)) * (x - mean)

    sel = np.flatnonzero(kind == sm.PLAIN)
    if len(sel):
        m[sel] = c[sel] * faded(value_noise(pts(sel, 0.25, q[0], q[1], q[2]), seed[sel]), 0.5, 0.25, sel)
    sel = np.flatnonzero(kind == sm.STONE)
    if len(sel):
        qs = pts(sel, s[sel, None], q[0], q[1], q[2])
        m[sel] = c[sel] * faded(value_noise(qs, seed[sel]), 0.5, s[sel], sel)
        fine = c[sel] > 0.2
        if fine.any():
            sf = sel[fine]
            m[sf] = 0.6 * m[sf] + 0.4 * c[sf] * faded(value_noise(qs[fine] * 3.1, seed[sf] + 7), 0.5,
                                                       s[sf] / 3.1, sf)
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
        # ring^2 has its first harmonic at half the ring period; its mean is 0.375
        m[sel] = c[sel] * faded(ring * ring, 0.375, grain * 3, sel)
        f_sel = fp(sel)
        joint = np.maximum(_line_cover(np.abs(vs / width - np.round(vs / width)) * width, 0.003, f_sel),
                           _line_cover(np.abs(along / 1.2 - np.round(along / 1.2)) * 1.2, 0.003, f_sel))
        joint = np.where(planks, joint, 0.0)
        tint[sel] = np.where(planks, 0.85 + 0.3 * _hash(row, 1, 0, seed[sel]), 1.0) * (1.0 - 0.55 * joint)
    sel = np.flatnonzero(kind == sm.TILES)
    if len(sel):
        us, vs = u[sel] / s[sel], v[sel] / s[sel]
        fu, fv = us - np.floor(us), vs - np.floor(vs)
        grout = _line_cover(np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) * s[sel], 0.004, fp(sel))
        tile = _hash(np.floor(us).astype(np.int64), np.floor(vs).astype(np.int64), 0, seed[sel])
        m[sel] = grout + (1 - grout) * c[sel] * 0.3 * tile
    sel = np.flatnonzero(kind == sm.FABRIC)
    if len(sel):
        weave = 0.5 + 0.5 * np.sin(2 * np.pi * u[sel] / s[sel]) * np.sin(2 * np.pi * v[sel] / s[sel])
        weave = faded(weave, 0.5, s[sel] / np.sqrt(2), sel)  # sin*sin: diagonal period s / sqrt(2)
        mott = faded(value_noise(pts(sel, 0.15, q[0], q[1], q[2]), seed[sel]), 0.5, 0.15, sel)
        m[sel] = c[sel] * (0.5 * weave + 0.5 * mott)
    sel = np.flatnonzero(kind == sm.PICTURE)
    if len(sel):  # blobs, stripes and blocks: a different "image" per seed
        us, vs, sd = u[sel] / s[sel], v[sel] / s[sel], seed[sel]
        qs = np.stack([us, vs, np.zeros(len(sel), np.float32)], 1)
        blobs = np.clip((value_noise(qs, sd) - 0.5) * 3 + 0.5, 0, 1)
        stripes = faded((np.sin(2 * np.pi * (us * 1.7 + 0.6 * vs)) > 0).astype(np.float32), 0.5,
                        s[sel] / 1.8, sel)
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
    if surface is not None:
        room = np.flatnonzero((surface == NYU_WALL) | (surface == NYU_FLOOR) | (surface == NYU_CEILING))
        if len(room):
            col[:, room] = _room_detail(col[:, room], p[:, room], n[:, room], surface[room], seed[room],
                                        fp(room))
    return np.clip(col, 0, 1), emissive


# Wall / floor / ceiling detail. Amplitudes are linear-albedo factors; real painted plaster shows a
# few % of roller / trowel unevenness at 2-10 cm, which is what lets stereo lock onto walls.
_UNEVEN_AMP = 0.08  # x (sum of three centred value-noise octaves, std 0.32) -> 2.6 % std, +-6 % at 1/99 %
_SKIRT_H_M = 0.08
_PLATE_HALF_M = 0.04  # sockets and switches: 8 x 8 cm plates
_SOCKET_Z_M, _SWITCH_Z_M = 0.30, 1.05
_OUTLET_CELL_M = 1.7  # at most one socket or switch per 1.7 m of wall


def _room_detail(col: np.ndarray, p: np.ndarray, n: np.ndarray, surface: np.ndarray, seed: np.ndarray,
                 footprint: np.ndarray | None) -> np.ndarray:
    """Albedo (3 x N, linear) of wall / floor / ceiling points with mid-frequency detail added.

    p: world points (3 x N, metres, z up with the floor at z = 0); n: unit normals (3 x N) facing
    the camera; surface: NYU40 id per point; seed: material seed (every pattern is derived from it
    by offsets, so no random draws are added to scene generation)."""
    out = col.copy()
    ps = p.T  # N x 3 world metres
    # plaster / roller unevenness (walls, ceilings) or wear (floors): octaves at 2.5, 4.5 and 8 cm.
    # The noise lattice repeats every 64 cells (1.6, 2.9, 5.1 m); incommensurate octaves keep the
    # sum from repeating within a room (repeated texture would give stereo false matches).
    uneven = sum(_fade(cell, footprint) * (value_noise(ps / cell, seed + off) - 0.5)
                 for cell, off in ((0.025, 101), (0.045, 151), (0.08, 211)))
    amp = np.where(surface == NYU_FLOOR, 1.2 * _UNEVEN_AMP, _UNEVEN_AMP)
    out *= 1.0 + amp * uneven
    # stains / smudges: sparse blotches of low-frequency noise, slightly yellowish (less blue)
    blot = value_noise(ps / 0.35, seed + 307)
    smudge = value_noise(ps / 0.12, seed + 401)
    stain = (np.clip((blot - 0.68) / 0.12, 0, 1) * 0.08
             + np.clip((smudge - 0.72) / 0.1, 0, 1) * 0.06 * _fade(0.12, footprint))
    out *= 1.0 - stain * np.array([0.8, 1.0, 1.3], np.float32)[:, None]
    wall = np.flatnonzero(surface == NYU_WALL)
    if len(wall):
        out[:, wall] = _wall_fixtures(out[:, wall], ps[wall], n[:, wall], seed[wall],
                                      None if footprint is None else footprint[wall])
    return out


def _wall_fixtures(col: np.ndarray, p: np.ndarray, n: np.ndarray, seed: np.ndarray,
                   footprint: np.ndarray | None) -> np.ndarray:
    """Skirting board (bottom ~8 cm) and sockets / switches on walls (col 3 x N linear, p N x 3
    world metres, n 3 x N unit normals)."""
    z = p[:, 2]
    # skirting colour per wall material: white, dark grey or brown (hash of the material seed)
    pick = _hash(seed, 3, 5, seed + 17)
    skirt = np.where(pick < 0.5, 0.85, np.where(pick < 0.75, 0.22, 0.35)).astype(np.float32)
    skirt_rgb = np.stack([skirt, skirt * np.where(pick >= 0.75, 0.75, 1.0),
                          skirt * np.where(pick >= 0.75, 0.55, 1.0)])
    height = _SKIRT_H_M * (0.9 + 0.4 * _hash(seed, 9, 1, seed))
    cover = _line_cover(np.abs(z - height * 0.5), height * 0.5, footprint)
    col = col * (1 - cover) + skirt_rgb * cover
    # along-wall coordinate (metres): horizontal tangent of the wall
    t = np.stack([-n[1], n[0]])
    t /= np.maximum(np.sqrt((t * t).sum(0)), 1e-6)
    a = t[0] * p[:, 0] + t[1] * p[:, 1]
    cell = np.floor(a / _OUTLET_CELL_M).astype(np.int64)
    what = _hash(cell, 11, 3, seed)  # < 0.45 socket, < 0.7 switch, else nothing
    centre = (cell + 0.25 + 0.5 * _hash(cell, 13, 7, seed)) * _OUTLET_CELL_M
    zc = np.where(what < 0.45, _SOCKET_Z_M, _SWITCH_Z_M)
    da, dz = a - centre, z - zc
    present = (what < 0.7).astype(np.float32)
    plate = _box_cover(da, dz, _PLATE_HALF_M, _PLATE_HALF_M, footprint) * present
    rim = np.clip(_box_cover(da, dz, _PLATE_HALF_M + 0.004, _PLATE_HALF_M + 0.004, footprint) * present - plate,
                  0, 1)  # contact shadow around the plate
    inner = np.where(what < 0.45, _box_cover(da, dz, 0.018, 0.018, footprint),  # socket face
                     _box_cover(da, dz, 0.013, 0.022, footprint)) * present  # rocker
    plate_rgb = 0.9 - 0.25 * inner
    col = col * (1 - plate) * (1 - 0.35 * rim) + plate * plate_rgb
    return col


def shade(tab: RenderTables, rays, depth, tri, normals, noise_seed: int | None = 0,
          occluder: o3d.t.geometry.RaycastingScene | None = None, style: RenderStyle = CAMERA) -> np.ndarray:
    """H x W x 3 uint8 colour image of a raycast; with ``occluder`` (the scene) lights cast shadows.

    One ray per pixel (``style.supersample`` is handled by the caller, see ``shade_linear`` and
    ``finish``)."""
    return finish(shade_linear(tab, rays, depth, tri, normals, occluder, style), noise_seed, style)


def shade_linear(tab: RenderTables, rays, depth, tri, normals,
                 occluder: o3d.t.geometry.RaycastingScene | None = None, style: RenderStyle = CAMERA) -> np.ndarray:
    """H x W x 3 float32 linear-light radiance (about 0..1) of a raycast (rays H x W x 6 with
    direction z_cam = 1, depth H x W metres, tri H x W, normals H x W x 3 world)."""
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
        part = tab.tri_part[tri.reshape(-1)[idx]]
        mat = tab.part_mat[part]
        footprint = None
        if style.antialias:
            # pixel footprint on the surface (metres): z / (f cos theta); grazing angles capped
            cos = np.abs((n * d).sum(0)) / np.sqrt((d * d).sum(0))
            footprint = (t / (_focal_px(rays) * np.maximum(cos, 0.05))).astype(np.float32)
        surface = tab.part_nyu40[part] if style.wall_detail else None
        alb, emissive = albedo_at(tab, mat, p, n, footprint, surface)
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
                att *= _shadow(occluder, p, n, lp, in_room, idx, h, w, 1 if style.full_shadows else 2)
            light += att * np.clip((n * L).sum(0), 0, None)
            hv = L + view
            ndh = np.clip((n * hv).sum(0) / np.sqrt((hv * hv).sum(0) + 1e-12), 0, None)
            ndh *= ndh  # ^2
            ndh *= ndh  # ^4
            ndh *= ndh  # ^8
            spec += att * ks * ndh * ndh * ndh * ndh * ndh  # ^40
        col = alb * (light * 0.55) * tab.light_rgb[:, None] + spec * 0.5
        img[:, idx] = np.where(emissive, alb, col)
    return img.T.reshape(h, w, 3)


def _focal_px(rays: np.ndarray) -> float:
    """Horizontal focal length (pixels) of a ray grid H x W x 6 whose directions have z_cam = 1:
    neighbouring directions differ by 1 / f."""
    if rays.shape[1] < 2:
        return 500.0  # one-pixel-wide image: any plausible value
    return 1.0 / max(float(np.linalg.norm(rays[0, 1, 3:] - rays[0, 0, 3:])), 1e-9)


def downsample(img: np.ndarray, k: int) -> np.ndarray:
    """Box-filter a (k H) x (k W) x C linear image to H x W x C (supersampling)."""
    if k == 1:
        return img
    h, w = img.shape[0] // k, img.shape[1] // k
    return img[:h * k, :w * k].reshape(h, k, w, k, -1).mean((1, 3), dtype=np.float32)


def finish(img: np.ndarray, noise_seed: int | None, style: RenderStyle = CAMERA,
           exposure: float = 1.0) -> np.ndarray:
    """Sensor model: linear H x W x 3 radiance x ``exposure`` -> uint8 sRGB with optional
    vignetting and Gaussian noise (sigma 2 DN after gamma; ``noise_seed`` None: noise-free). Use
    one seed per frame: the same seed in every view is noise fixed to the image, which fakes
    multi-view consistency."""
    h, w = img.shape[:2]
    if exposure != 1.0:
        img = img * np.float32(exposure)
    if style.vignette:
        img = img * _vignette(h, w, style.vignette)[..., None]
    code = (np.clip(img, 0, 1) * (len(_SRGB) - 1)).astype(np.int32)
    if noise_seed is None:
        return _SRGB[code].astype(np.uint8)
    noise = np.random.default_rng(noise_seed).standard_normal(img.shape, dtype=np.float32) * 2.0
    return np.clip(_SRGB[code] + noise, 0, 255).astype(np.uint8)


_SRGB = np.round(255 * np.linspace(0, 1, 4096, dtype=np.float32) ** (1 / 2.2)).astype(np.float32)  # gamma LUT


def _shadow(occluder, p, n, lp, in_room, idx, h, w, step: int = 2) -> np.ndarray:
    """Light factor (N) per hit point: SHADOW_LIGHT where the segment to the light is blocked.

    step 2: shadow rays are cast from every second pixel in x and y (a quarter of the rays) and
    spread to the 2x2 block: 4x cheaper, but shadow edges are 2 px coarse and snap to the pixel
    grid, so they do not move consistently between views (a false photometric cue); step 1: one
    shadow ray per pixel."""
    rows, cols = idx // w, idx % w
    if step == 1:
        sel = np.flatnonzero(in_room)
        rays = np.empty((len(sel), 6), np.float32)
        rays[:, :3] = (p[:, sel] + n[:, sel] * 0.003).T
        rays[:, 3:] = (lp[:, None] - p[:, sel]).T
        occ = occluder.test_occlusions(o3d.core.Tensor(rays), tnear=0.0, tfar=0.995).numpy()
        out = np.ones(len(idx), np.float32)
        out[sel[occ.astype(bool)]] = SHADOW_LIGHT
        return out
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


EXPOSURE_TARGET = 0.85  # linear level the 95th percentile of the probe views is exposed to
EXPOSURE_RANGE = (0.4, 1.5)


def probe_exposure(tab: RenderTables, scene: o3d.t.geometry.RaycastingScene,
                   poses: list[np.ndarray], K: np.ndarray, size: tuple[int, int]) -> float:
    """Per-scene exposure: EXPOSURE_TARGET over the 95th percentile of the brightest channel of
    small linear probe renders (poses camera-to-world, K pixels for ``size``), clipped to
    EXPOSURE_RANGE. Deterministic (no random draws)."""
    vals = []
    for T in poses:
        rays, depth, tri, normals = raycast(scene, T, K, size)
        vals.append(shade_linear(tab, rays, depth, tri, normals, scene, CAMERA).max(-1).ravel())
    level = float(np.quantile(np.concatenate(vals), 0.95)) if vals else EXPOSURE_TARGET
    return float(np.clip(EXPOSURE_TARGET / max(level, 1e-6), *EXPOSURE_RANGE))


def _vignette(h: int, w: int, strength: float = 0.18) -> np.ndarray:
    """Linear-light falloff 1 - strength r^2 (r = 1 at the mid-edges). Real lenses vignette, but a
    per-pixel gain breaks brightness constancy between views (DESIGN.md: it dominated the warp
    error), so the default style leaves it out."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    return 1.0 - strength * r2
