"""Handheld-scan-like camera paths through a synthetic scene.

Positions: a tour of waypoints in free space (cells whose distance to every surface is >= 0.36 m
at all heights 1.2-1.8 m), joined by shortest grid paths that prefer open space, smoothed
(Gaussian along arc length, pulled back to the raw path where smoothing would cut a corner),
then walked at 0.2-0.45 m/s with a slowly varying height in [1.2, 1.8] m. The tour returns to its
start for the last quarter (revisits). Orientation: look-at targets (furniture, walls, floor)
switched every 1.5-3.5 s, followed with a first-order filter and a rate limit (yaw 28 deg/s,
pitch 20 deg/s), plus a small roll. Poses are T_world_cam (camera-to-world, optical frame).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

CELL_M = 0.05
CLEARANCE_PLAN_M = 0.40  # free cells (checked every 0.1 m of height)
CLEARANCE_SMOOTH_M = 0.36  # smoothed path samples (every 0.02 m, heights every 0.1 m): >= 0.30 everywhere
CLEARANCE_MIN_M = 0.3
VERTICAL_SPEED_M_S = 0.1
LATERAL_ACC_M_S2 = 0.25
LONGITUDINAL_ACC_M_S2 = 0.4
HEIGHT_RANGE_M = (1.2, 1.8)
YAW_RATE_DEG = 28.0
PITCH_RATE_DEG = 20.0


def _free_grid(scene):
    """Cell centres (N x 2, layout frame), clearance (N) and 4-neighbour edges of the free cells."""
    boxes = np.array([[r.x0, r.y0, r.x1, r.y1] for r in scene.rooms])
    lo, hi = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    nx, ny = np.ceil((hi - lo) / CELL_M).astype(int)
    xs = lo[0] + (np.arange(nx) + 0.5) * CELL_M
    ys = lo[1] + (np.arange(ny) + 0.5) * CELL_M
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    xy = np.stack([gx.ravel(), gy.ravel()], 1)
    inside = np.zeros(len(xy), bool)
    for x0, y0, x1, y1 in boxes:
        inside |= (xy[:, 0] > x0) & (xy[:, 0] < x1) & (xy[:, 1] > y0) & (xy[:, 1] < y1)
    for c in scene.doorways:  # cells in the wall gap of a doorway
        inside |= np.linalg.norm(xy - c, axis=1) < 0.5
    clear = np.zeros(len(xy))
    idx = np.flatnonzero(inside)
    heights = np.arange(HEIGHT_RANGE_M[0], HEIGHT_RANGE_M[1] + 1e-6, 0.1)
    pts = np.concatenate([np.c_[xy[idx], np.full(len(idx), z)] for z in heights])
    d = scene.distance(scene.layout_to_world(pts)).reshape(len(heights), -1).min(0)
    clear[idx] = d
    free = clear >= CLEARANCE_PLAN_M
    return xy, clear, free, (nx, ny)


def _graph(xy, clear, free, shape):
    nx, ny = shape
    ids = np.arange(nx * ny).reshape(nx, ny)
    rows, cols, w = [], [], []
    pairs = ((ids[:-1, :], ids[1:, :], 1.0), (ids[:, :-1], ids[:, 1:], 1.0),
             (ids[:-1, :-1], ids[1:, 1:], math.sqrt(2)), (ids[:-1, 1:], ids[1:, :-1], math.sqrt(2)))
    for a, b, step in pairs:  # 8-connected: no staircase paths
        a, b = a.ravel(), b.ravel()
        ok = free[a] & free[b]
        cost = step * CELL_M * (1 + 3 * np.clip(0.9 - np.minimum(clear[a[ok]], clear[b[ok]]), 0, None))
        rows += [a[ok], b[ok]]
        cols += [b[ok], a[ok]]
        w += [cost, cost]
    n = nx * ny
    return coo_matrix((np.concatenate(w), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()


def _path(pred, src, dst):
    out = [dst]
    while out[-1] != src:
        p = pred[out[-1]]
        if p < 0:
            return None
        out.append(p)
    return out[::-1]


def _tour(scene, rng, length_m):
    """Polyline (M x 2, layout frame) of about length_m through free space, ending with a revisit."""
    xy, clear, free, shape = _free_grid(scene)
    G = _graph(xy, clear, free, shape)
    fidx = np.flatnonzero(free)
    if len(fidx) == 0:
        raise RuntimeError("synthetic scene has no free space for the camera")
    # start in the largest connected free region, preferring open space
    _, comp = connected_components(G, directed=False)
    big = np.bincount(comp[fidx]).argmax()
    fidx = fidx[comp[fidx] == big]
    room_of = np.full(len(xy), -1)
    for i, r in enumerate(scene.rooms):
        room_of[r.contains(xy)] = i
    cur = int(fidx[np.argmax(clear[fidx] + rng.uniform(0, 0.3, len(fidx)))])
    start, pts, total = cur, [xy[cur]], 0.0
    n_rooms = len(scene.rooms)
    visited_rooms = [room_of[cur]]
    forward = 0.75 * length_m

    def metric(seg):
        return float(np.linalg.norm(np.diff(xy[seg], axis=0), axis=1).sum()) if seg and len(seg) > 1 else 0.0

    for _ in range(1000):
        dist, pred = dijkstra(G, indices=cur, return_predecessors=True)
        back = _path(pred, cur, start)
        # walk on until the tour, including the way back to the start (the revisit), is long enough;
        # 20 % margin for the length that smoothing cuts off
        if total >= forward and total + metric(back) >= 1.2 * length_m:
            break
        reach = fidx[np.isfinite(dist[fidx])]
        eu = np.linalg.norm(xy[reach] - xy[cur], axis=1)
        want_new_room = n_rooms > 1 and total > forward * len(set(visited_rooms)) / n_rooms
        cand = reach[(eu > 0.8) & (eu < 3.0)]
        if want_new_room:
            other = reach[~np.isin(room_of[reach], visited_rooms) & (room_of[reach] >= 0)]
            if len(other):
                cand = other[np.argsort(dist[other])[: max(1, len(other) // 10)]]
        elif len(pts) > 10 and len(cand):  # prefer to keep going rather than turning back
            heading = pts[-1] - pts[-10]
            ahead = cand[(xy[cand] - xy[cur]) @ heading > -0.3 * np.linalg.norm(xy[cand] - xy[cur], axis=1)
                         * np.linalg.norm(heading)]
            cand = ahead if len(ahead) else cand
        if len(cand) == 0:
            cand = reach[eu > 0.3] if (eu > 0.3).any() else reach
        nxt = int(rng.choice(cand))
        seg = _path(pred, cur, nxt)
        if seg is None or len(seg) < 2:
            break
        pts += [xy[i] for i in seg[1:]]
        total += metric(seg)  # metres, not graph cost
        cur = nxt
        if room_of[cur] >= 0 and room_of[cur] not in visited_rooms:
            visited_rooms.append(room_of[cur])
    back = back or [cur]
    pts += [xy[i] for i in back[1:]]
    return np.array(pts)


def _resample(poly, step):
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    keep = np.concatenate([[True], seg > 1e-9])
    poly, s = poly[keep], s[keep]
    q = np.arange(0, s[-1] + 1e-9, step)
    return np.stack([np.interp(q, s, poly[:, 0]), np.interp(q, s, poly[:, 1])], 1)


def _smooth_noise(rng, n, sigma, lo, hi):
    pad = 2 * int(sigma)
    x = gaussian_filter1d(rng.normal(0, 1, n + 2 * pad), sigma, mode="nearest")[pad: pad + n]
    x = (x - x.min()) / max(1e-9, np.ptp(x))
    return lo + (hi - lo) * x


def _smoothed_path(scene, rng, length_m):
    """Tour of ~length_m, Gaussian-smoothed (sigma 0.24 m) but kept CLEARANCE_SMOOTH_M from surfaces
    at every height of the camera range; re-sampled every 0.02 m."""
    raw = _resample(_tour(scene, rng, length_m), 0.02)
    if len(raw) < 2:
        raw = np.vstack([raw, raw + 1e-3])
    smooth = np.stack([gaussian_filter1d(raw[:, k], 12, mode="nearest") for k in range(2)], 1)
    zs = np.arange(HEIGHT_RANGE_M[0], HEIGHT_RANGE_M[1] + 1e-6, 0.1)
    for it in range(8):  # pull back towards the raw path where smoothing cut too close to a surface
        pts = np.concatenate([np.c_[smooth, np.full(len(smooth), z)] for z in zs])
        d = scene.distance(scene.layout_to_world(pts)).reshape(len(zs), -1).min(0)
        bad = d < CLEARANCE_SMOOTH_M
        if not bad.any():
            break
        w = gaussian_filter1d(bad.astype(float), 5) > 0.01
        smooth[w] = raw[w] if it == 7 else 0.5 * smooth[w] + 0.5 * raw[w]
    # uniform re-sampling also drops the coincident points smoothing leaves at U-turns
    return _resample(smooth, 0.02)


def camera_path(scene, frames: int, seed: int, hz: float = 30.0) -> list[np.ndarray]:
    """``frames`` camera-to-world poses (4x4 float64, optical frame) sampled at ``hz``."""
    rng = np.random.default_rng([seed, 7919])
    dt = 1.0 / hz
    speed = _smooth_noise(rng, frames, hz * 1.5, 0.2, 0.45)
    need = float(speed.sum() * dt) + 0.5
    for attempt in range(4):  # smoothing shortens the grid path; retry longer if it fell short
        smooth = _smoothed_path(scene, rng, need * 1.5 ** attempt)
        if np.linalg.norm(np.diff(smooth, axis=0), axis=1).sum() >= need:
            break
    seg = np.linalg.norm(np.diff(smooth, axis=0), axis=1)
    s_path = np.concatenate([[0], np.cumsum(seg)])
    # slow down in tight turns: lateral acceleration v^2 * curvature <= LATERAL_ACC_M_S2
    tangent = np.gradient(smooth, s_path, axis=0)
    heading = np.unwrap(np.arctan2(tangent[:, 1], tangent[:, 0]))
    curvature = np.nan_to_num(np.abs(np.gradient(heading, s_path)), nan=1e3, posinf=1e3)
    v_max = np.sqrt(LATERAL_ACC_M_S2 / np.maximum(curvature, 1e-6))
    ds = np.diff(s_path)
    for i in range(len(v_max) - 2, -1, -1):  # brake in time before turns (and stop at cusps)
        v_max[i] = min(v_max[i], math.sqrt(v_max[i + 1] ** 2 + 2 * LONGITUDINAL_ACC_M_S2 * ds[i]))
    for i in range(1, len(v_max)):  # and speed up gently after them
        v_max[i] = min(v_max[i], math.sqrt(v_max[i - 1] ** 2 + 2 * LONGITUDINAL_ACC_M_S2 * ds[i - 1]))
    total = s_path[-1]
    s = np.zeros(frames)
    for i in range(1, frames):
        v = min(speed[i - 1], float(np.interp(s[i - 1], s_path, v_max)))
        s[i] = s[i - 1] + max(v, 0.01) * dt
    if total > 0:  # (only for very short paths) walk back along the path instead of stopping
        s = s % (2 * total)
        s = np.where(s > total, 2 * total - s, s)
    else:
        s = np.zeros_like(s)
    target_z = _smooth_noise(rng, frames, hz * 3, HEIGHT_RANGE_M[0] + 0.05, HEIGHT_RANGE_M[1] - 0.05)
    z = np.empty(frames)
    z[0] = target_z[0]
    for i in range(1, frames):  # follow the target height with a bounded vertical speed
        z[i] = z[i - 1] + np.clip(target_z[i] - z[i - 1], -VERTICAL_SPEED_M_S * dt, VERTICAL_SPEED_M_S * dt)
    pos = np.stack([np.interp(s, s_path, smooth[:, 0]), np.interp(s, s_path, smooth[:, 1]), z], 1)
    return _orient(scene, rng, pos, dt)


def _targets(scene):
    """Points worth looking at (layout frame): centres of furniture, doors, windows, pictures, curtains
    (blank walls make poor views)."""
    centres = np.array(scene.object_centres_layout()).reshape(-1, 3)
    # one target per 0.5 m cell, so objects made of many parts (bookshelves) do not dominate
    _, first = np.unique(np.floor(centres / 0.5).astype(np.int64), axis=0, return_index=True)
    return centres[np.sort(first)]


def _orient(scene, rng, pos, dt):
    n = len(pos)
    targets = _targets(scene)
    yaw = pitch = None
    out = []
    switch_at, target = 0, None
    max_dyaw, max_dp = math.radians(YAW_RATE_DEG) * dt, math.radians(PITCH_RATE_DEG) * dt
    alpha = 1 - math.exp(-dt / 0.6)
    roll = np.radians(_smooth_noise(rng, n, 40, -2.0, 2.0))
    for i in range(n):
        p = pos[i]
        if i >= switch_at or target is None:
            rel = targets - p
            dist = np.linalg.norm(rel[:, :2], axis=1)
            ok = dist > 1.2
            if yaw is not None and rng.random() < 0.7:  # sweep: prefer a clearly different heading
                turn = np.abs((np.arctan2(rel[:, 1], rel[:, 0]) - yaw + math.pi) % (2 * math.pi) - math.pi)
                sweep = ok & (turn > math.radians(45)) & (turn < math.radians(160))
                ok = sweep if sweep.any() else ok
            ok = np.flatnonzero(ok)
            target = targets[rng.choice(ok)] if len(ok) else p + np.array([1.0, 0, -0.3])
            switch_at = i + int(rng.uniform(1.2, 3.0) / dt)
        rel = target - p
        want_yaw = math.atan2(rel[1], rel[0])
        want_pitch = float(np.clip(math.atan2(rel[2], np.linalg.norm(rel[:2])), math.radians(-50), math.radians(10)))
        if yaw is None:
            yaw, pitch = want_yaw, want_pitch
        dy = (want_yaw - yaw + math.pi) % (2 * math.pi) - math.pi
        yaw += float(np.clip(alpha * dy * 3, -max_dyaw, max_dyaw))
        pitch += float(np.clip(alpha * (want_pitch - pitch) * 3, -max_dp, max_dp))
        out.append(_pose(p, yaw, pitch, roll[i]))
    T_wl = scene.T_world_layout
    return [T_wl @ T for T in out]


def _pose(p, yaw, pitch, roll):
    f = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    right = np.cross(f, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    c, s = math.cos(roll), math.sin(roll)
    x, y = c * right + s * down, -s * right + c * down
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, f], 1)
    T[:3, 3] = p
    return T
