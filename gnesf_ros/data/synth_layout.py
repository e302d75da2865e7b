"""Procedural room layouts: shells with doors and windows, furniture placed against walls and free.

Layout frame: rooms are axis-aligned rectangles on the floor z = 0, z up. The scene is moved to the
world by a random yaw + offset (``Layout.T_world_layout``) so nothing downstream can rely on axis
alignment. Rooms of a multi-room scene sit in a 1- or 2-row grid, separated by 0.15 m walls and
connected by open doorways along a random spanning tree (every room touches the outside, so
every room can get a window).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gnesf_ros.data import synth_objects as so
from gnesf_ros.data.synth_materials import Material
from gnesf_ros.data.synth_mesh import Part, pose

WALL_THICKNESS_M = 0.15
DOOR_HEIGHT_M = 2.25  # open doorways: tall enough for a camera at 1.8 m to keep 0.4 m clearance
_GRID_M = 0.05

# Per room kind: objects always placed (these give the class coverage) and optional extras.
ROOM_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bedroom": (("bed", "nightstand", "cabinet", "desk", "chair", "bookshelf", "trash can"),
                ("armchair", "nightstand", "lamp", "box", "ottoman", "plant", "end table", "sofa")),
    "living": (("sofa", "coffee table", "armchair", "tv stand", "bookshelf", "cabinet", "desk", "chair", "ottoman"),
               ("lamp", "plant", "armchair", "box", "end table", "trash can", "bench")),
    "office": (("desk", "chair", "desk", "chair", "file cabinet", "bookshelf", "table", "chair", "sofa", "mini fridge",
                "trash can"), ("cabinet", "box", "box", "plant", "lamp", "chair", "bookshelf")),
    "kitchen": (("counter", "refrigerator", "table", "chair", "chair", "cabinet", "trash can"),
                ("chair", "chair", "bench", "box", "plant", "bookshelf")),
    "bathroom": (("bathtub", "toilet", "vanity", "sink", "cabinet", "trash can"), ("box", "plant", "bench")),
}


@dataclass
class Opening:
    """A hole in a wall: along-wall interval [u0, u1] and height interval [z0, z1] (metres)."""

    u0: float
    u1: float
    z0: float
    z1: float
    kind: str  # 'doorway' | 'window'


@dataclass
class Wall:
    origin: np.ndarray  # 2D start corner (layout frame)
    direction: np.ndarray  # 2D unit vector along the wall; cross(z, normal)
    normal: np.ndarray  # 2D unit vector into the room
    length: float
    openings: list[Opening] = field(default_factory=list)
    doors: list[tuple[float, float]] = field(default_factory=list)  # closed door panels (u0, u1)


@dataclass
class Room:
    """Axis-aligned room [x0, x1] x [y0, y1] (layout frame), ceiling at ``height``."""

    x0: float
    y0: float
    x1: float
    y1: float
    height: float
    kind: str
    walls: list[Wall] = field(default_factory=list)
    lights: list[np.ndarray] = field(default_factory=list)  # 3D light positions (layout frame)

    @property
    def size(self) -> tuple[float, float]:
        return self.x1 - self.x0, self.y1 - self.y0

    def contains(self, xy: np.ndarray, margin: float = 0.0) -> np.ndarray:
        xy = np.asarray(xy)
        return ((xy[..., 0] >= self.x0 + margin) & (xy[..., 0] <= self.x1 - margin)
                & (xy[..., 1] >= self.y0 + margin) & (xy[..., 1] <= self.y1 - margin))


@dataclass
class Layout:
    parts: list[Part]
    materials: list[Material]
    rooms: list[Room]
    doorways: list[np.ndarray]  # 2D centres of the doorways between rooms (layout frame)
    T_world_layout: np.ndarray


def _walls(r: Room) -> list[Wall]:
    corners = {"S": ((r.x1, r.y0), (0, 1)), "E": ((r.x1, r.y1), (-1, 0)),
               "N": ((r.x0, r.y1), (0, -1)), "W": ((r.x0, r.y0), (1, 0))}
    out = []
    for name in "SENW":
        o, n = corners[name]
        n = np.array(n, float)
        d = np.array([-n[1], n[0]])  # z x n
        length = r.x1 - r.x0 if name in "SN" else r.y1 - r.y0
        out.append(Wall(np.array(o, float), d, n, length))
    return out


def _wall_T(w: Wall, u: float, z: float = 0.0, offset: float = 0.0) -> np.ndarray:
    """Frame on wall ``w`` at ``u`` along it: x along the wall, y into the room, z up."""
    p = w.origin + w.direction * u + w.normal * offset
    return pose(p[0], p[1], z, math.atan2(w.normal[1], w.normal[0]) - math.pi / 2)


class _Occupancy:
    """Floor occupancy raster of one room (5 cm cells) for placing furniture without overlap."""

    def __init__(self, room: Room):
        self.room = room
        nx, ny = int(math.ceil((room.x1 - room.x0) / _GRID_M)), int(math.ceil((room.y1 - room.y0) / _GRID_M))
        xs = room.x0 + (np.arange(nx) + 0.5) * _GRID_M
        ys = room.y0 + (np.arange(ny) + 0.5) * _GRID_M
        self.xy = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1)
        self.used = np.zeros((nx, ny), bool)

    def _mask(self, T: np.ndarray, w: float, d: float, margin: float) -> np.ndarray:
        rel = self.xy - T[:2, 3]
        lx = rel @ T[:2, 0]
        ly = rel @ T[:2, 1]
        return (np.abs(lx) <= w / 2 + margin) & (np.abs(ly) <= d / 2 + margin)

    def fits(self, T, w, d, margin=0.05) -> bool:
        # corners inside the room
        c = np.array([[sx * w / 2, sy * d / 2] for sx in (-1, 1) for sy in (-1, 1)]) @ T[:2, :2].T + T[:2, 3]
        if not self.room.contains(c, margin=-1e-6).all():
            return False
        return not (self.used & self._mask(T, w, d, margin)).any()

    def mark(self, T, w, d, margin=0.0):
        self.used |= self._mask(T, w, d, margin)


def _grid_rooms(rng: np.random.Generator, n: int) -> tuple[list[Room], list[tuple[int, int, str]]]:
    rows = 1 if n <= 3 else 2
    cols = math.ceil(n / rows)
    widths = rng.uniform(3.4, 6.0, cols)
    depths = rng.uniform(3.4, 5.5, rows)
    height = rng.uniform(2.5, 3.0)
    xs = np.concatenate([[0.0], np.cumsum(widths + WALL_THICKNESS_M)])
    ys = np.concatenate([[0.0], np.cumsum(depths + WALL_THICKNESS_M)])
    kinds = list(ROOM_KINDS)
    rooms, index = [], {}
    for k in range(n):
        r, c = divmod(k, cols)
        kind = kinds[int(rng.integers(len(kinds)))]
        w, d = widths[c], depths[r]
        if kind == "bathroom" and n == 1:  # a lone bathroom is small (in a grid it fills its cell)
            w, d = min(w, rng.uniform(2.6, 3.4)), min(d, rng.uniform(2.8, 3.6))
        index[(r, c)] = len(rooms)
        rooms.append(Room(xs[c], ys[r], xs[c] + w, ys[r] + d, height, kind))
    # spanning tree over grid neighbours (random order), so every room is reachable
    edges = [(index[(r, c)], index[(r, c + 1)], "x") for (r, c) in index if (r, c + 1) in index]
    edges += [(index[(r, c)], index[(r + 1, c)], "y") for (r, c) in index if (r + 1, c) in index]
    order = rng.permutation(len(edges))
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    tree = []
    for e in order:
        a, b, axis = edges[e]
        if find(a) != find(b):
            parent[find(a)] = find(b)
            tree.append((a, b, axis))
    return rooms, tree


def _connect(rng, rooms: list[Room], a: int, b: int, axis: str, bld: so.Builder) -> np.ndarray | None:
    """Cut an open doorway between neighbouring rooms a (left/below) and b; returns its 2D centre."""
    ra, rb = rooms[a], rooms[b]
    width = rng.uniform(0.95, 1.1)
    if axis == "x":
        lo, hi = max(ra.y0, rb.y0) + 0.35, min(ra.y1, rb.y1) - 0.35 - width
        wa, wb = ra.walls[1], rb.walls[3]  # E of a, W of b
    else:
        lo, hi = max(ra.x0, rb.x0) + 0.35, min(ra.x1, rb.x1) - 0.35 - width
        wa, wb = ra.walls[2], rb.walls[0]  # N of a, S of b
    if hi <= lo:
        return None
    s = rng.uniform(lo, hi)  # lower coordinate of the opening along the shared axis
    for wall in (wa, wb):
        # along-wall coordinate of s .. s + width (walls run in either direction)
        p0 = np.array([wall.origin[0], s]) if axis == "x" else np.array([s, wall.origin[1]])
        u = float((p0 - wall.origin) @ wall.direction)
        u0, u1 = sorted((u, u + width * (1 if (wall.direction > 0).any() else -1)))
        wall.openings.append(Opening(u0, u1, 0.0, DOOR_HEIGHT_M, "doorway"))
    # jambs (the wall's thickness around the hole) and the lintel
    frame = bld.mat("frame", np.eye(4))
    gap = WALL_THICKNESS_M
    if axis == "x":
        x0, x1 = ra.x1, rb.x0
        for y, ny in ((s, 1), (s + width, -1)):
            bld.parts.append(_jamb(gap, DOOR_HEIGHT_M, pose((x0 + x1) / 2, y, DOOR_HEIGHT_M / 2), frame,
                                   normal=np.array([0, ny, 0.0])))
        bld.parts.append(_jamb(gap, width, pose((x0 + x1) / 2, s + width / 2, DOOR_HEIGHT_M), frame,
                               normal=np.array([0, 0, -1.0])))
        centre = np.array([(x0 + x1) / 2, s + width / 2])
    else:
        y0, y1 = ra.y1, rb.y0
        for x, nx in ((s, 1), (s + width, -1)):
            bld.parts.append(_jamb(gap, DOOR_HEIGHT_M, pose(x, (y0 + y1) / 2, DOOR_HEIGHT_M / 2), frame,
                                   normal=np.array([nx, 0, 0.0]), along=np.array([0, 1.0, 0])))
        bld.parts.append(_jamb(gap, width, pose(s + width / 2, (y0 + y1) / 2, DOOR_HEIGHT_M), frame,
                               normal=np.array([0, 0, -1.0]), along=np.array([0, 1.0, 0])))
        centre = np.array([s + width / 2, (y0 + y1) / 2])
    # threshold: floor of the passage through the wall
    sx, sy = (gap, width) if axis == "x" else (width, gap)
    bld.quad(pose(centre[0], centre[1], 0.0), sx, sy, "floor", bld.mat("floor", np.eye(4)))
    # open door leaf standing perpendicular to the wall inside room a, hinged at one side
    leaf_wall = wa
    op = leaf_wall.openings[-1]
    hinge_u = op.u0 if rng.random() < 0.5 else op.u1
    T = _wall_T(leaf_wall, hinge_u + (0.03 if hinge_u == op.u0 else -0.03), 0.0, width / 2 + 0.02)
    leaf_m = bld.mat("door", T)
    bld.box(T @ pose(0, 0, 0, math.pi / 2), (0, 0, 2.02 / 2), (width - 0.02, 0.04, 2.02), "door", leaf_m, skip=("-z",))
    return centre


def _jamb(depth, length, T_centre, mat, normal, along=None, raw="doorframe") -> Part:
    """Quad of size depth x length centred at T_centre's origin, facing ``normal`` (layout frame)."""
    n = normal / np.linalg.norm(normal)
    if along is None:
        along = np.array([1.0, 0, 0])
    a = along - n * (along @ n)
    a /= np.linalg.norm(a)
    v = np.cross(n, a)
    T = np.eye(4)
    T[:3, :3] = np.stack([a, v, n], 1)
    T[:3, 3] = T_centre[:3, 3]
    # quad x along 'along' (the wall thickness), y along v (the jamb's length)
    return Part("quad", (depth, length), T, so.raw_label_table()[raw][0], mat)


def _shell(bld: so.Builder, room: Room, rng):
    """Floor, ceiling and walls (with holes for openings) of one room, all facing inwards."""
    w, d = room.size
    Tr = pose(room.x0, room.y0, 0)
    floor_m, wall_m, ceil_m = bld.mat("floor", Tr), bld.mat("wall", Tr), bld.mat("ceiling", Tr)
    bld.quad(pose(room.x0 + w / 2, room.y0 + d / 2, 0), w, d, "floor", floor_m)
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    bld.quad(pose(room.x0 + w / 2, room.y0 + d / 2, room.height) @ flip, w, d, "ceiling", ceil_m)
    for wall in room.walls:
        ops = sorted(wall.openings, key=lambda o: o.u0)
        cuts = [0.0]
        for o in ops:
            cuts += [o.u0, o.u1]
        cuts.append(wall.length)
        pieces = [(cuts[i], cuts[i + 1], 0.0, room.height) for i in range(0, len(cuts), 2)
                  if cuts[i + 1] - cuts[i] > 1e-6]
        for o in ops:
            if o.z0 > 0:
                pieces.append((o.u0, o.u1, 0.0, o.z0))
            pieces.append((o.u0, o.u1, o.z1, room.height))
        for u0, u1, z0, z1 in pieces:
            T = _wall_T(wall, (u0 + u1) / 2, (z0 + z1) / 2) @ np.array(
                [[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)  # quad normal -> into room
            bld.quad(T, u1 - u0, z1 - z0, "wall", wall_m)
        if rng.random() < 0.6:  # skirting boards between openings
            sk = bld.mat("frame", Tr)
            hgt = rng.uniform(0.06, 0.1)
            for i in range(0, len(cuts), 2):
                u0, u1 = cuts[i], cuts[i + 1]
                if u1 - u0 > 0.05:
                    bld.box(_wall_T(wall, (u0 + u1) / 2, 0, 0.008), (0, 0, hgt / 2), (u1 - u0, 0.016, hgt), "wall", sk,
                            skip=("-y", "-z"))


def _free_span(wall: Wall, width: float, margin: float, rng, tries: int = 20) -> float | None:
    """Start u0 (m along the wall) of a span of ``width`` at least ``margin`` from the wall's ends and
    0.3 m from its other openings; None when ``tries`` random draws find no room."""
    for _ in range(tries):
        u0 = rng.uniform(margin, wall.length - margin - width)
        if all(u0 + width < o.u0 - 0.3 or u0 > o.u1 + 0.3 for o in wall.openings):
            return u0
    return None


def _window(bld: so.Builder, room: Room, wall: Wall, rng) -> bool:
    width = rng.uniform(0.8, min(2.2, wall.length - 1.0))
    if width < 0.6:
        return False
    sill = rng.uniform(0.7, 1.0)
    top = min(room.height - 0.25, sill + rng.uniform(1.0, 1.5))
    u0 = _free_span(wall, width, 0.4, rng)
    if u0 is None:
        return False
    u1 = u0 + width
    wall.openings.append(Opening(u0, u1, sill, top, "window"))
    uc, h = (u0 + u1) / 2, top - sill
    recess = 0.1
    glass = bld.mat("glass", _wall_T(wall, uc, sill))
    frame = bld.mat("frame", _wall_T(wall, uc, sill))
    to_wall = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)
    bld.quad(_wall_T(wall, uc, (sill + top) / 2, -recess) @ to_wall, width, h, "window", glass)
    for part in ((0, 0, -1.0), (0, 0, 1.0)):  # recess faces: sill bottom / lintel
        z = sill if part[2] < 0 else top
        n = np.array([0, 0, -part[2]])
        T = _wall_T(wall, uc, z, -recess / 2)
        bld.parts.append(_jamb(recess, width, T, frame, normal=n, along=np.r_[wall.normal, 0], raw="window"))
    for uu, sgn in ((u0, 1), (u1, -1)):
        T = _wall_T(wall, uu, (sill + top) / 2, -recess / 2)
        bld.parts.append(_jamb(recess, h, T, frame, normal=np.r_[wall.direction * sgn, 0], along=np.r_[wall.normal, 0],
                               raw="window"))
    ft = rng.uniform(0.04, 0.07)
    Tw = _wall_T(wall, uc, 0.0, -recess + 0.03)
    bld.box(Tw, (0, 0, top - ft / 2), (width, 0.06, ft), "window", frame)
    bld.box(Tw, (0, 0, sill + ft / 2), (width, 0.06, ft), "window", frame)
    for s in (-1, 1):
        bld.box(Tw, (s * (width / 2 - ft / 2), 0, (sill + top) / 2), (ft, 0.06, h - 2 * ft), "window", frame)
    if width > 1.1 or rng.random() < 0.4:
        bld.box(Tw, (0, 0, (sill + top) / 2), (ft * 0.8, 0.05, h - 2 * ft), "window", frame)
    bld.box(_wall_T(wall, uc, 0.0, 0.0), (0, 0.04, sill - 0.02), (width + 0.1, 0.1, 0.04), "window", frame)
    return True


def _curtains(bld: so.Builder, room: Room, wall: Wall, op: Opening, rng):
    rod_z = min(room.height - 0.08, op.z1 + rng.uniform(0.08, 0.2))
    bottom = rng.uniform(0.02, 0.05) if rng.random() < 0.6 else op.z0 - rng.uniform(0.0, 0.1)
    m = bld.mat("curtain", _wall_T(wall, op.u0))
    for side in (-1, 1):
        cw = rng.uniform(0.3, 0.6)
        u = op.u0 + cw / 2 - 0.15 if side < 0 else op.u1 - cw / 2 + 0.15
        T = _wall_T(wall, u, 0.0, rng.uniform(0.09, 0.13))
        bld.curtain(T, (0, 0, (rod_z + bottom) / 2), cw, rod_z - bottom, rng.uniform(0.025, 0.05),
                    rng.uniform(0.1, 0.2), "curtain", m)


def _closed_door(bld: so.Builder, room: Room, wall: Wall, rng) -> bool:
    width = rng.uniform(0.8, 0.95)
    u0 = _free_span(wall, width, 0.25, rng)
    if u0 is None:
        return False
    h = rng.uniform(2.0, 2.1)
    T = _wall_T(wall, u0 + width / 2, 0.0, 0.0)
    m = bld.mat("door", T)
    frame = bld.mat("frame", T)
    bld.box(T, (0, 0.02, h / 2), (width, 0.04, h), "door", m, skip=("-y", "-z"))
    for s in (-1, 1):
        bld.box(T, (s * (width / 2 + 0.04), 0.015, (h + 0.05) / 2), (0.08, 0.03, h + 0.05), "doorframe", frame,
                skip=("-y", "-z"))
    bld.box(T, (0, 0.015, h + 0.05), (width + 0.16, 0.03, 0.1), "doorframe", frame, skip=("-y",))
    knob = bld.mat("metal", T)
    s = rng.choice([-1, 1])
    bld.cyl(T, (s * (width / 2 - 0.08), 0.06, 1.0), 0.025, 0.025, 0.04, "door", knob)
    wall.doors.append((u0 - 0.1, u0 + width + 0.1))
    return True


def _reserve_openings(occ: _Occupancy, room: Room):
    """Keep the floor in front of doorways and doors free (walkway + door swing)."""
    for wall in room.walls:
        spans = [(o.u0, o.u1) for o in wall.openings if o.kind == "doorway"] + wall.doors
        for u0, u1 in spans:
            T = _wall_T(wall, (u0 + u1) / 2, 0, 0.55)
            occ.mark(T, u1 - u0 + 0.3, 1.1)


def _place_against_wall(occ, room, name, w, d, h, rng, tries=60):
    for _ in range(tries):
        wi = int(rng.choice(4, p=np.array([wl.length for wl in room.walls]) / sum(wl.length for wl in room.walls)))
        wall = room.walls[wi]
        if wall.length < w + 0.1:
            continue
        u = rng.uniform(w / 2 + 0.02, wall.length - w / 2 - 0.02)
        blocked = any(u + w / 2 > o.u0 - 0.05 and u - w / 2 < o.u1 + 0.05 and (o.kind == "doorway" or h > o.z0 - 0.05)
                      for o in wall.openings)
        blocked |= any(u + w / 2 > a and u - w / 2 < b for a, b in wall.doors)
        if blocked:
            continue
        T = _wall_T(wall, u, 0.0, d / 2 + 0.01)
        if occ.fits(T, w, d):
            return T
    return None


def _place_free(occ, room, w, d, rng, tries=60, wall_margin=0.5):
    for _ in range(tries):
        rw, rd = room.size
        if rw < w + 2 * wall_margin or rd < d + 2 * wall_margin:
            return None
        x = rng.uniform(room.x0 + wall_margin + w / 2, room.x1 - wall_margin - w / 2)
        y = rng.uniform(room.y0 + wall_margin + d / 2, room.y1 - wall_margin - d / 2)
        yaw = rng.integers(4) * math.pi / 2 + rng.normal(0, 0.15)
        T = pose(x, y, 0, yaw)
        if occ.fits(T, w, d, margin=0.1):
            return T
    return None


def _sample_dims(name, rng):
    _, wr, dr, hr, _ = so.OBJECTS[name]
    return rng.uniform(*wr), rng.uniform(*dr), rng.uniform(*hr)


def _furnish(bld: so.Builder, room: Room, rng):
    occ = _Occupancy(room)
    _reserve_openings(occ, room)
    must, extra = ROOM_KINDS[room.kind]
    n_extra = int(rng.integers(1, len(extra) + 1))
    names = list(must) + [extra[i] for i in rng.permutation(len(extra))[:n_extra]]
    placed: dict[str, list[tuple[np.ndarray, float, float, float]]] = {}
    if room.kind in ("living", "bedroom", "office") and rng.random() < 0.5:
        w, d, h = _sample_dims("rug", rng)
        T = _place_free(occ, room, w, d, rng, wall_margin=0.4)
        if T is not None:  # furniture may stand on it: do not mark it occupied
            so.OBJECTS["rug"][0](bld, T, w, d, h)
    for name in names:
        fn, _, _, _, at_wall = so.OBJECTS[name]
        w, d, h = _sample_dims(name, rng)
        if name in ("chair",) and placed.get("table" if "table" in placed else "desk") and rng.random() < 0.85:
            T = _chair_at(occ, placed, w, d, rng)
        elif name == "nightstand" and "bed" in placed:
            T = _beside(occ, placed["bed"][0], w, d, rng)
        elif name == "coffee table" and "sofa" in placed:
            Ts, sw, sd, _ = placed["sofa"][0]
            T = Ts @ pose(0, sd / 2 + d / 2 + rng.uniform(0.35, 0.5), 0, rng.normal(0, 0.05))
            T = T if occ.fits(T, w, d) else None
        else:
            T = None
        if T is None:
            T = _place_anywhere(occ, room, name, w, d, h, at_wall, rng)
        if T is None and name in must:  # the room needs it: try the smallest size of its kind
            _, wr, dr, _, _ = so.OBJECTS[name]
            w, d = wr[0], dr[0]
            T = _place_anywhere(occ, room, name, w, d, h, at_wall, rng, tries=200)
        if T is None:
            continue
        occ.mark(T, w, d)
        fn(bld, T, w, d, h)
        placed.setdefault(name, []).append((T, w, d, h))
    return placed


def _place_anywhere(occ, room, name, w, d, h, at_wall, rng, tries=60):
    wall_first = at_wall or rng.random() < 0.3
    T = _place_against_wall(occ, room, name, w, d, h, rng, tries) if wall_first else None
    if T is None and (not at_wall or name in ("desk", "sofa")):
        T = _place_free(occ, room, w, d, rng, tries)
    if T is None and not at_wall:
        T = _place_against_wall(occ, room, name, w, d, h, rng, tries)
    return T


def _chair_at(occ, placed, w, d, rng):
    """A chair pulled up to a table or desk, facing it."""
    options = placed.get("table", []) + placed.get("desk", [])
    for _ in range(12):
        Tt, tw, td, _ = options[int(rng.integers(len(options)))]
        side = int(rng.integers(4))
        along, across = (tw, td) if side in (0, 2) else (td, tw)
        off = rng.uniform(-0.3, 0.3) * max(0.0, along - w)
        yaw = side * math.pi / 2
        turn = pose(0, 0, 0, math.pi + rng.normal(0, 0.2))  # chair front faces the table
        # check the spot just clear of the table, then push the chair in (under the top)
        T_out = Tt @ pose(0, 0, 0, yaw) @ pose(off, across / 2 + d / 2 + 0.02, 0) @ turn
        if occ.fits(T_out, w, d, margin=0.02):
            return Tt @ pose(0, 0, 0, yaw) @ pose(off, across / 2 + d / 2 - rng.uniform(0.0, 0.2), 0) @ turn
    return None


def _beside(occ, bed_entry, w, d, rng):
    Tb, bw, bd, _ = bed_entry
    for s in rng.permutation([-1, 1]):
        T = Tb @ pose(s * (bw / 2 + w / 2 + 0.05), -bd / 2 + d / 2, 0)
        if occ.fits(T, w, d):
            return T
    return None


def _wall_decor(bld: so.Builder, room: Room, placed, rng):
    """Pictures on free wall stretches above low furniture."""
    n = int(rng.integers(1, 4))
    for _ in range(n * 8):
        if n == 0:
            break
        wall = room.walls[int(rng.integers(4))]
        w, h = rng.uniform(0.3, 1.1), rng.uniform(0.3, 0.8)
        if wall.length < w + 0.4:
            continue
        u = rng.uniform(w / 2 + 0.2, wall.length - w / 2 - 0.2)
        zc = rng.uniform(1.35, 1.7)
        if zc + h / 2 > room.height - 0.15:
            continue
        if any(u + w / 2 > o.u0 - 0.1 and u - w / 2 < o.u1 + 0.1 for o in wall.openings):
            continue
        if any(u + w / 2 > a and u - w / 2 < b for a, b in wall.doors):
            continue
        T = _wall_T(wall, u, 0.0, 0.0)
        # tall furniture in front? check objects near this spot
        tall = False
        for entries in placed.values():
            for Tf, fw, fd, fh in entries:
                if fh > zc - h / 2 - 0.1 and np.linalg.norm(Tf[:2, 3] - T[:2, 3]) < (fw + w) / 2 + 0.1 and \
                        abs((Tf[:2, 3] - T[:2, 3]) @ wall.normal) < fd / 2 + 0.3:
                    tall = True
        if tall:
            continue
        frame = bld.mat("frame", T)
        bld.box(T, (0, 0.015, zc), (w, 0.03, h), "picture", frame, skip=("-y",))
        canvas = bld.mat("picture", T)
        bld.box(T, (0, 0.032, zc), (w - 0.06, 0.006, h - 0.06), "picture", canvas, skip=("-y",))
        wall.doors.append((u - w / 2, u + w / 2))  # no second picture on top of it
        n -= 1


def build_layout(rng: np.random.Generator, rooms: int = 1) -> Layout:
    """Random rooms with shells, openings, furniture and decor (see module docstring)."""
    room_list, tree = _grid_rooms(rng, rooms)
    for r in room_list:
        r.walls = _walls(r)
    bld = so.Builder(rng)
    doorways = []
    for a, b, axis in tree:
        c = _connect(rng, room_list, a, b, axis, bld)
        if c is not None:
            doorways.append(c)
    for r in room_list:
        exterior = [w for w in r.walls if w.length > 1.6 and not any(
            o.contains(w.origin + w.direction * w.length / 2 - w.normal * 0.4) for o in room_list)]
        exterior = exterior or [w for w in r.walls if w.length > 1.6]
        order = rng.permutation(len(exterior))
        n_win = 1 + int(rng.random() < 0.4)
        wins = [exterior[i] for i in order[:n_win]]
        for k, wall in enumerate(wins):
            if _window(bld, r, wall, rng) and (k == 0 or rng.random() < 0.5):
                _curtains(bld, r, wall, wall.openings[-1], rng)
        if rooms == 1 or rng.random() < 0.5:
            for i in rng.permutation(4):
                if r.walls[i].length > 1.6 and _closed_door(bld, r, r.walls[i], rng):
                    break
    for r in room_list:
        _shell(bld, r, rng)
        placed = _furnish(bld, r, rng)
        _wall_decor(bld, r, placed, rng)
        w, d = r.size
        nl = 1 if w * d < 14 else 2
        for k in range(nl):
            x = r.x0 + w * ((k + 0.5) / nl if w > d else 0.5) + rng.normal(0, 0.2)
            y = r.y0 + d * ((k + 0.5) / nl if w <= d else 0.5) + rng.normal(0, 0.2)
            r.lights.append(np.array([x, y, r.height - 0.3]))
            m = bld.mat("ceramic", pose(x, y, r.height))
            bld.cyl(pose(x, y, r.height - 0.03), (0, 0, 0), 0.18, 0.18, 0.06, "lamp", m, skip=("+z",))
    # random placement in the world: yaw + offset (floor stays at z = 0)
    G = pose(rng.uniform(-2, 2), rng.uniform(-2, 2), 0.0, rng.uniform(0, 2 * math.pi))
    for p in bld.parts:
        p.T_world_part = G @ p.T_world_part
    Ginv = np.linalg.inv(G)
    for m in bld.materials:
        m.T_obj_world = m.T_obj_world @ Ginv
    return Layout(bld.parts, bld.materials, room_list, doorways, G)
