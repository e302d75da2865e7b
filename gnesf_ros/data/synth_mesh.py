"""Primitive shapes of the synthetic scenes, tessellated at a chosen edge length.

Every shape is built in its own part frame and moved to the world by a 4x4 ``T_world_part``.
``max_edge_m=inf`` gives the coarse mesh used for raycasting; a small value (e.g. 0.03 m) gives
the dense ground-truth mesh, whose triangle edges (diagonals included) are all <= max_edge_m.
Curved directions (cylinder angle, curtain folds) use the same sampling in both, so the dense
mesh lies exactly on the rendered surface.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_CURVE_STEP_M = 0.02  # arc length between samples around cylinders / along curtain folds


@dataclass
class Part:
    """One primitive of an object.

    shape: 'box' dims (sx, sy, sz) centred at the origin; 'cylinder' dims (rx, ry, h) axis +z,
    centred; 'quad' dims (sx, sy), normal +z; 'curtain' dims (width, height, amplitude, period):
    a sheet in the x-z plane folded along y. ``skip`` names box faces left out because they
    are never visible ('-z' floor contact, '-y' against a wall, ...); for cylinders '+z'/'-z' caps.
    """

    shape: str
    dims: tuple[float, ...]
    T_world_part: np.ndarray
    raw_id: int
    material: int
    skip: tuple[str, ...] = ()


def _grid(c, u, v, nu: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """Quad c +- u +- v as an (nu x nv) grid of triangles; normal along u x v."""
    s = np.linspace(-1.0, 1.0, nu + 1)
    t = np.linspace(-1.0, 1.0, nv + 1)
    ss, tt = np.meshgrid(s, t, indexing="ij")
    verts = c + ss.reshape(-1, 1) * u + tt.reshape(-1, 1) * v
    return verts, _grid_faces(nu, nv)


def _grid_faces(nu: int, nv: int, wrap_u: bool = False) -> np.ndarray:
    """Faces of a (nu+1) x (nv+1) vertex grid (row-major in u); wrap_u joins the last column to the first."""
    cols = nv + 1
    i, j = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    i, j = i.ravel(), j.ravel()
    i1 = (i + 1) % (nu if wrap_u else nu + 1)
    a, b, c, d = i * cols + j, i1 * cols + j, i1 * cols + j + 1, i * cols + j + 1
    return np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]).astype(np.int64)


def _n(length: float, max_edge: float) -> int:
    """Grid segments along ``length`` so that grid triangles (diagonals included) have edges <= max_edge."""
    return 1 if not math.isfinite(max_edge) else max(1, math.ceil(length * math.sqrt(2) / max_edge - 1e-9))


def _box(dims, skip, max_edge):
    h = np.asarray(dims, float) / 2.0
    ex, ey, ez = np.eye(3)
    faces = {  # name: (centre, u, v) with u x v pointing outwards
        "+x": (ex * h[0], ey * h[1], ez * h[2]), "-x": (-ex * h[0], ez * h[2], ey * h[1]),
        "+y": (ey * h[1], ez * h[2], ex * h[0]), "-y": (-ey * h[1], ex * h[0], ez * h[2]),
        "+z": (ez * h[2], ex * h[0], ey * h[1]), "-z": (-ez * h[2], ey * h[1], ex * h[0]),
    }
    out = []
    for name, (c, u, v) in faces.items():
        if name in skip:
            continue
        out.append(_grid(c, u, v, _n(2 * np.linalg.norm(u), max_edge), _n(2 * np.linalg.norm(v), max_edge)))
    return out


def _cylinder(dims, skip, max_edge):
    rx, ry, hgt = dims
    ns = max(12, math.ceil(2 * math.pi * max(rx, ry) / _CURVE_STEP_M))
    ang = np.linspace(0, 2 * math.pi, ns, endpoint=False)
    ring = np.stack([rx * np.cos(ang), ry * np.sin(ang)], 1)
    nz = _n(hgt, max_edge)
    z = np.linspace(-hgt / 2, hgt / 2, nz + 1)
    side = np.concatenate([np.repeat(ring, nz + 1, 0), np.tile(z, ns)[:, None]], 1)
    out = [(side, _grid_faces(ns, nz, wrap_u=True))]
    nr = _n(max(rx, ry), max_edge)
    for sign, name in ((1.0, "+z"), (-1.0, "-z")):
        if name in skip:
            continue
        rad = np.linspace(0, 1, nr + 1)[1:]
        verts = [np.array([[0.0, 0.0, sign * hgt / 2]])]
        verts += [np.concatenate([ring * r, np.full((ns, 1), sign * hgt / 2)], 1) for r in rad]
        verts = np.concatenate(verts)
        k = np.arange(ns)
        fan = np.stack([np.zeros(ns, int), 1 + k, 1 + (k + 1) % ns], 1)
        tris = [fan]
        for r in range(nr - 1):  # ring r -> ring r+1
            a, b = 1 + r * ns + k, 1 + r * ns + (k + 1) % ns
            c, d = a + ns, b + ns
            tris += [np.stack([a, c, d], 1), np.stack([a, d, b], 1)]
        tris = np.concatenate(tris)
        if sign < 0:
            tris = tris[:, ::-1]
        out.append((verts, tris))
    return out


def _curtain(dims, max_edge):
    width, height, amp, period = dims
    step = _CURVE_STEP_M / math.sqrt(1 + (2 * math.pi * amp / period) ** 2)  # arc length <= the curve step
    nx = max(2, math.ceil(width / step))
    x = np.linspace(-width / 2, width / 2, nx + 1)
    y = amp * np.sin(2 * math.pi * x / period)
    nz = _n(height, max_edge)
    z = np.linspace(-height / 2, height / 2, nz + 1)
    verts = np.stack([np.repeat(x, nz + 1), np.repeat(y, nz + 1), np.tile(z, nx + 1)], 1)
    return [(verts, _grid_faces(nx, nz))]


def _quad(dims, max_edge):
    sx, sy = dims
    return [_grid(np.zeros(3), np.array([sx / 2, 0, 0]), np.array([0, sy / 2, 0]),
                  _n(sx, max_edge), _n(sy, max_edge))]


def part_mesh(part: Part, max_edge_m: float = math.inf) -> tuple[np.ndarray, np.ndarray]:
    """World-frame (vertices Vx3 float64, faces Fx3 int64) of one part."""
    if part.shape == "box":
        pieces = _box(part.dims, part.skip, max_edge_m)
    elif part.shape == "cylinder":
        pieces = _cylinder(part.dims, part.skip, max_edge_m)
    elif part.shape == "curtain":
        pieces = _curtain(part.dims, max_edge_m)
    elif part.shape == "quad":
        pieces = _quad(part.dims, max_edge_m)
    else:
        raise ValueError(f"unknown part shape {part.shape!r}")
    verts, faces, off = [], [], 0
    for v, f in pieces:
        verts.append(v)
        faces.append(f + off)
        off += len(v)
    v = np.concatenate(verts)
    T = part.T_world_part
    return v @ T[:3, :3].T + T[:3, 3], np.concatenate(faces)


def merge_parts(parts: list[Part], max_edge_m: float = math.inf):
    """All parts as one mesh: (vertices Vx3 float64, faces Fx3 int64, part index per face F int32,
    part index per vertex V int32)."""
    verts, faces, fpart, vpart, off = [], [], [], [], 0
    for i, p in enumerate(parts):
        v, f = part_mesh(p, max_edge_m)
        verts.append(v)
        faces.append(f + off)
        fpart.append(np.full(len(f), i, np.int32))
        vpart.append(np.full(len(v), i, np.int32))
        off += len(v)
    return (np.concatenate(verts), np.concatenate(faces), np.concatenate(fpart), np.concatenate(vpart))


def pose(x: float = 0.0, y: float = 0.0, z: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    """4x4 transform: rotation ``yaw`` (rad) about +z, then translation (x, y, z)."""
    c, s = math.cos(yaw), math.sin(yaw)
    T = np.eye(4)
    T[:2, :2] = [[c, -s], [s, c]]
    T[:3, 3] = (x, y, z)
    return T


def rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    T = np.eye(4)
    T[1:3, 1:3] = [[c, -s], [s, c]]
    return T
