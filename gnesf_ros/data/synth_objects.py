"""Furniture and fixtures of the synthetic scenes, built from boxes, cylinders and curtain sheets.

Object frame: origin on the floor at the centre of the footprint, x across the width, y to the
front (the back is at y = -depth/2, against a wall when the object stands at one), z up.
Every builder takes the object-to-world transform ``T`` and its footprint ``(w, d)`` plus height
and appends parts to a :class:`Builder`.
"""
from __future__ import annotations

import csv
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from gnesf_ros.data.synth_materials import Material, sample_material
from gnesf_ros.data.synth_mesh import Part, pose, rot_x

LABEL_TSV = Path(__file__).resolve().parent / "scannet_labels.tsv"


@lru_cache(maxsize=1)
def raw_label_table() -> dict[str, tuple[int, int]]:
    """raw_category -> (ScanNet raw id, NYU40 id), from the bundled scannet_labels.tsv."""
    with open(LABEL_TSV, newline="") as f:
        return {r["raw_category"]: (int(r["id"]), int(r["nyu40id"]))
                for r in csv.DictReader(f, delimiter="\t")}


class Builder:
    """Collects parts and materials of a scene."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.parts: list[Part] = []
        self.materials: list[Material] = []

    def mat(self, kind: str, T_world_obj: np.ndarray) -> int:
        self.materials.append(sample_material(kind, self.rng, T_world_obj))
        return len(self.materials) - 1

    def _add(self, shape, dims, T, raw, mat, skip=()):
        self.parts.append(Part(shape, tuple(float(x) for x in dims), T, raw_label_table()[raw][0], mat, tuple(skip)))

    def box(self, T, centre, size, raw, mat, yaw=0.0, skip=()):
        """Box of ``size`` (x, y, z) centred at ``centre`` in the frame ``T``."""
        self._add("box", size, T @ pose(*centre, yaw), raw, mat, skip)

    def cyl(self, T, centre, rx, ry, h, raw, mat, skip=(), T_extra=None):
        Tp = T @ pose(*centre)
        self._add("cylinder", (rx, ry, h), Tp if T_extra is None else Tp @ T_extra, raw, mat, skip)

    def curtain(self, T, centre, width, height, amp, period, raw, mat):
        self._add("curtain", (width, height, amp, period), T @ pose(*centre), raw, mat)

    def quad(self, T_world_part, sx, sy, raw, mat):
        self._add("quad", (sx, sy), T_world_part, raw, mat)


def _legs(b: Builder, T, w, d, h, inset, raw, mat, rng, round_legs=None):
    round_legs = rng.random() < 0.4 if round_legs is None else round_legs
    t = rng.uniform(0.03, 0.055)
    for sx in (-1, 1):
        for sy in (-1, 1):
            c = (sx * (w / 2 - inset - t / 2), sy * (d / 2 - inset - t / 2), h / 2)
            if round_legs:
                b.cyl(T, c, t / 2, t / 2, h, raw, mat, skip=("+z", "-z"))
            else:
                b.box(T, c, (t, t, h), raw, mat, skip=("+z", "-z"))


def table(b: Builder, T, w, d, h, raw="table"):
    rng = b.rng
    m = b.mat("table", T)
    leg_m = m if rng.random() < 0.6 else b.mat("metal", T)
    top = rng.uniform(0.025, 0.05)
    b.box(T, (0, 0, h - top / 2), (w, d, top), raw, m)
    if w < 1.0 and d < 1.0 and rng.random() < 0.3:  # pedestal table
        b.cyl(T, (0, 0, (h - top) / 2), 0.05, 0.05, h - top, raw, leg_m, skip=("+z", "-z"))
        b.cyl(T, (0, 0, 0.015), min(w, d) * 0.35, min(w, d) * 0.35, 0.03, raw, leg_m, skip=("-z",))
    else:
        _legs(b, T, w, d, h - top, rng.uniform(0.0, 0.08), raw, leg_m, rng)
        if rng.random() < 0.4:  # apron under the top
            b.box(T, (0, 0, h - top - 0.05), (w - 0.12, d - 0.12, 0.1), raw, m, skip=("+z",))
    if rng.random() < 0.6:
        tabletop_clutter(b, T, w, d, h)


def tabletop_clutter(b: Builder, T, w, d, h, n_max=3):
    """A few small things (books, boxes, a pot plant, a lamp) on a top of footprint w x d at height h."""
    rng = b.rng
    for _ in range(int(rng.integers(0, n_max + 1))):
        x, y = rng.uniform(-0.4, 0.4) * (w - 0.2), rng.uniform(-0.35, 0.35) * (d - 0.15)
        Ti = T @ pose(x, y, h, rng.uniform(0, math.pi))
        kind = rng.choice(["book", "box", "plant", "lamp"], p=[0.35, 0.35, 0.15, 0.15])
        if kind == "plant":
            b.cyl(Ti, (0, 0, 0.06), 0.06, 0.06, 0.12, "plant", b.mat("ceramic", Ti), skip=("-z",))
            b.box(Ti, (0, 0, 0.18), (0.12, 0.12, 0.12), "plant", b.mat("fabric", Ti), yaw=0.5)
        elif kind == "lamp":
            b.cyl(Ti, (0, 0, 0.01), 0.07, 0.07, 0.02, "lamp", b.mat("metal", Ti), skip=("-z",))
            b.cyl(Ti, (0, 0, 0.16), 0.01, 0.01, 0.28, "lamp", b.mat("metal", Ti))
            b.cyl(Ti, (0, 0, 0.33), 0.1, 0.1, 0.14, "lamp", b.mat("fabric", Ti))
        else:
            sx, sy = rng.uniform(0.1, 0.3), rng.uniform(0.08, 0.22)
            clutter_box(b, Ti, sx, sy, rng.uniform(0.02, 0.06) if kind == "book" else rng.uniform(0.05, 0.2), kind)


def desk(b: Builder, T, w, d, h):
    rng = b.rng
    m = b.mat("desk", T)
    top = rng.uniform(0.025, 0.04)
    b.box(T, (0, 0, h - top / 2), (w, d, top), "desk", m)
    if rng.random() < 0.5:  # panel sides
        for s in (-1, 1):
            b.box(T, (s * (w / 2 - 0.015), 0, (h - top) / 2), (0.03, d - 0.02, h - top), "desk", m, skip=("-z", "+z"))
        b.box(T, (0, -d / 2 + 0.1, h * 0.55), (w - 0.06, 0.02, h * 0.5), "desk", m)
    else:
        _legs(b, T, w, d, h - top, 0.02, "desk", b.mat("metal", T) if rng.random() < 0.5 else m, rng)
    if rng.random() < 0.6:  # drawer block on one side
        s = rng.choice([-1, 1])
        bw = min(0.45, w * 0.35)
        x = s * (w / 2 - bw / 2 - 0.03)
        b.box(T, (x, 0, (h - top) / 2), (bw, d - 0.06, h - top), "desk", m, skip=("-z", "+z"))
        n = int(rng.integers(2, 4))
        dh = (h - top - 0.06) / n
        for i in range(n):
            b.box(T, (x, d / 2 - 0.02, 0.04 + dh * (i + 0.5)), (bw - 0.04, 0.015, dh - 0.02), "desk", m)
    if rng.random() < 0.6:
        monitor(b, T @ pose(rng.uniform(-0.2, 0.2) * w, -d * 0.15, h))
    if rng.random() < 0.5:
        clutter_box(b, T @ pose(rng.uniform(-0.4, 0.4) * w, rng.uniform(0, 0.2) * d, h, rng.uniform(-0.5, 0.5)),
                    rng.uniform(0.08, 0.25), rng.uniform(0.06, 0.2), rng.uniform(0.03, 0.15), "book")


def monitor(b: Builder, T):
    rng = b.rng
    m = b.mat("plastic", T)
    w, hgt = rng.uniform(0.45, 0.7), rng.uniform(0.28, 0.42)
    b.box(T, (0, 0, 0.01), (0.22, 0.18, 0.02), "monitor", m, skip=("-z",))
    b.box(T, (0, 0, 0.12), (0.05, 0.03, 0.22), "monitor", m)
    b.box(T, (0, 0.02, 0.12 + hgt / 2), (w, 0.03, hgt), "monitor", m)
    screen = b.mat("laminate", T)
    b.box(T, (0, 0.037, 0.12 + hgt / 2), (w - 0.03, 0.004, hgt - 0.03), "monitor", screen)


def chair(b: Builder, T, w, d, h):
    """h = height of the back's top; seat at ~0.45 m."""
    rng = b.rng
    m = b.mat("chair", T)
    seat_h = rng.uniform(0.42, 0.5)
    frame = m if rng.random() < 0.5 else b.mat("metal", T)
    if rng.random() < 0.3:  # office chair on a star base
        raw = "office chair"
        b.box(T, (0, 0, seat_h - 0.04), (w, d, 0.08), raw, m)
        b.box(T, (0, -d / 2 + 0.04, (seat_h + h) / 2 + 0.03), (w * 0.9, 0.06, h - seat_h - 0.06), raw, m)
        b.cyl(T, (0, 0, (seat_h - 0.08) / 2 + 0.05), 0.025, 0.025, seat_h - 0.13, raw, frame, skip=("+z", "-z"))
        for k in range(5):
            a = 2 * math.pi * k / 5 + rng.uniform(0, 0.3)
            Tk = T @ pose(0, 0, 0, a)
            b.box(Tk, (0.15, 0, 0.07), (0.3, 0.04, 0.03), raw, frame)
            b.cyl(Tk, (0.28, 0, 0.025), 0.025, 0.025, 0.05, raw, frame, skip=("-z",))
        return
    raw = "chair"
    b.box(T, (0, 0, seat_h - 0.025), (w, d, 0.05), raw, m)
    _legs(b, T, w, d, seat_h - 0.05, 0.01, raw, frame, rng)
    back_t = 0.035
    if rng.random() < 0.5:  # solid back
        b.box(T, (0, -d / 2 + back_t / 2, (seat_h + h) / 2), (w, back_t, h - seat_h), raw, m)
    else:  # two posts + a rail
        for s in (-1, 1):
            b.box(T, (s * (w / 2 - 0.02), -d / 2 + back_t / 2, (seat_h + h) / 2), (0.035, back_t, h - seat_h),
                  raw, frame)
        b.box(T, (0, -d / 2 + back_t / 2, h - 0.1), (w, back_t, 0.18), raw, m)


def sofa(b: Builder, T, w, d, h, raw="couch"):
    rng = b.rng
    m = b.mat("sofa", T)
    base_z, seat_z = rng.uniform(0.05, 0.12), rng.uniform(0.38, 0.46)
    arm_w, back_d = rng.uniform(0.1, 0.25), rng.uniform(0.15, 0.25)
    arm_h = rng.uniform(0.55, 0.68)
    if base_z > 0.08:
        _legs(b, T, w, d, base_z, 0.05, raw, b.mat("wood", T), rng)
    b.box(T, (0, 0, (base_z + seat_z - 0.1) / 2), (w, d, seat_z - 0.1 - base_z), raw, m,
          skip=("-z",) if base_z < 0.08 else ())
    n = max(1, int(round((w - 2 * arm_w) / 0.65)))
    cw = (w - 2 * arm_w) / n
    for i in range(n):  # seat cushions
        x = -w / 2 + arm_w + cw * (i + 0.5)
        b.box(T, (x, back_d / 2, seat_z - 0.05), (cw - 0.01, d - back_d, 0.1), raw, m)
    b.box(T, (0, -d / 2 + back_d / 2, (seat_z - 0.1 + h) / 2), (w, back_d, h - seat_z + 0.1), raw, m)
    for s in (-1, 1):
        b.box(T, (s * (w / 2 - arm_w / 2), 0, (seat_z - 0.1 + arm_h) / 2), (arm_w, d, arm_h - seat_z + 0.1), raw, m)
    for i in range(int(rng.integers(0, 3))):  # cushions leaning on the back
        pm = b.mat("fabric", T)
        x = rng.uniform(-0.5, 0.5) * (w - 2 * arm_w - 0.45)
        b.box(T @ pose(x, -d / 2 + back_d + 0.08, seat_z + 0.2, rng.uniform(-0.2, 0.2)) @ rot_x(-0.25),
              (0, 0, 0), (0.42, 0.1, 0.4), "pillow", pm)


def armchair(b: Builder, T, w, d, h):
    sofa(b, T, w, d, h, raw="armchair")


def bed(b: Builder, T, w, d, h):
    """h = mattress top height."""
    rng = b.rng
    frame = b.mat("wood" if rng.random() < 0.6 else "fabric", T)
    sheet = b.mat("bed", T)
    fz = h - rng.uniform(0.18, 0.26)
    b.box(T, (0, 0, fz / 2 + 0.04), (w, d, fz - 0.08), "bed", frame)
    _legs(b, T, w, d, 0.08, 0.03, "bed", frame, rng, round_legs=False)
    b.box(T, (0, 0.01, (fz + h) / 2), (w - 0.04, d - 0.06, h - fz), "bed", sheet)
    hb_h = rng.uniform(0.85, 1.25)
    b.box(T, (0, -d / 2 + 0.03, hb_h / 2), (w + 0.04, 0.06, hb_h), "bed", frame, skip=("-z",))
    if rng.random() < 0.3:
        b.box(T, (0, d / 2 - 0.025, (h - 0.05) / 2), (w + 0.04, 0.05, h - 0.05), "bed", frame, skip=("-z",))
    blanket = b.mat("bed", T)
    bl = d * rng.uniform(0.5, 0.7)
    b.box(T, (0, d / 2 - bl / 2 - 0.02, h + 0.02), (w - 0.02, bl, 0.04), "bed", blanket)
    n = 1 if w < 1.2 else 2
    for i in range(n):
        pm = b.mat("fabric", T)
        x = 0 if n == 1 else (i - 0.5) * w / 2
        b.box(T, (x, -d / 2 + 0.3, h + 0.06), (min(0.65, w / n - 0.1), 0.4, 0.12), "pillow", pm)


def cabinet(b: Builder, T, w, d, h, raw="cabinet", legs=None, skip_back=True):
    rng = b.rng
    m = b.mat("cabinet", T)
    front_m = m if rng.random() < 0.7 else b.mat("cabinet", T)
    handle = b.mat("metal", T)
    legs = rng.random() < 0.3 if legs is None else legs
    z0 = 0.1 if legs else 0.0
    if legs:
        _legs(b, T, w, d, z0, 0.03, raw, m, rng, round_legs=True)
    b.box(T, (0, -0.01, z0 + (h - z0) / 2), (w, d - 0.02, h - z0), raw, m,
          skip=(("-y",) if skip_back else ()) + (() if legs else ("-z",)))
    ncol = max(1, int(round(w / rng.uniform(0.4, 0.6))))
    drawers = h < 1.0 and rng.random() < 0.5
    nrow = int(rng.integers(2, 5)) if drawers else (1 if h < 1.3 else int(rng.integers(1, 3)))
    cw, rh = (w - 0.02) / ncol, (h - z0 - 0.02) / nrow
    for i in range(ncol):
        for j in range(nrow):
            x, z = -w / 2 + 0.01 + cw * (i + 0.5), z0 + 0.01 + rh * (j + 0.5)
            b.box(T, (x, d / 2 - 0.01, z), (cw - 0.01, 0.018, rh - 0.01), raw, front_m)
            hx = x if drawers else x + (cw / 2 - 0.06) * (1 if i % 2 == 0 else -1)
            hz = z + (rh / 2 - 0.05 if drawers else 0)
            hs = (0.12, 0.015, 0.02) if drawers else (0.02, 0.015, min(0.15, rh * 0.4))
            b.box(T, (hx, d / 2 + 0.01, hz), hs, raw, handle)


def bookshelf(b: Builder, T, w, d, h):
    rng = b.rng
    m = b.mat("bookshelf", T)
    t = rng.uniform(0.018, 0.03)
    for s in (-1, 1):
        b.box(T, (s * (w / 2 - t / 2), 0, h / 2), (t, d, h), "bookshelf", m, skip=("-z",))
    b.box(T, (0, -d / 2 + 0.005, h / 2), (w - 2 * t, 0.01, h), "bookshelf", m, skip=("-y", "-z"))
    nshelf = max(2, int(h / rng.uniform(0.3, 0.42)))
    gap = (h - t) / nshelf
    for k in range(nshelf + 1):
        b.box(T, (0, 0, k * gap + t / 2), (w - 2 * t, d, t), "bookshelf", m, skip=("-z",) if k == 0 else ())
        if k == nshelf:
            break
        x = -w / 2 + t + rng.uniform(0.0, 0.2)  # run of books
        while x < w / 2 - t - 0.06 and rng.random() < 0.93:
            bw = rng.uniform(0.015, 0.05)
            bh = rng.uniform(0.45, 0.9) * (gap - t)
            bd = rng.uniform(0.6, 0.95) * d
            if rng.random() < 0.12:  # a gap or a box instead of books
                x += rng.uniform(0.05, 0.2)
                continue
            bm = b.mat("fabric" if rng.random() < 0.5 else "plastic", T)
            b.box(T, (x + bw / 2, -d / 2 + 0.01 + bd / 2, k * gap + t + bh / 2), (bw, bd, bh), "book", bm, skip=("-z",))
            x += bw + 0.002


def refrigerator(b: Builder, T, w, d, h, raw="refrigerator"):
    rng = b.rng
    m = b.mat("refrigerator", T)
    handle = b.mat("metal", T)
    b.box(T, (0, -0.03, h / 2), (w, d - 0.06, h), raw, m, skip=("-z", "-y"))
    split = h * rng.uniform(0.6, 0.72) if h > 1.2 else h
    for z0, z1 in ((0.02, split - 0.01), (split + 0.01, h - 0.01)):
        if z1 <= z0:
            continue
        b.box(T, (0, d / 2 - 0.03, (z0 + z1) / 2), (w - 0.01, 0.05, z1 - z0), raw, m)
        hz = (z0 + z1) / 2
        b.box(T, (w / 2 - 0.06, d / 2 + 0.02, hz), (0.025, 0.035, min(0.6, (z1 - z0) * 0.6)), raw, handle)


def toilet(b: Builder, T, w, d, h):
    rng = b.rng
    m = b.mat("ceramic", T)
    bowl_h = rng.uniform(0.38, 0.42)
    b.cyl(T, (0, 0.06, bowl_h * 0.4), w * 0.38, d * 0.3, bowl_h * 0.8, "toilet", m, skip=("-z", "+z"))
    b.cyl(T, (0, 0.08, bowl_h * 0.9), w * 0.5, d * 0.38, bowl_h * 0.2, "toilet", m)
    seat = m if rng.random() < 0.7 else b.mat("plastic", T)
    b.cyl(T, (0, 0.08, bowl_h + 0.015), w * 0.5, d * 0.38, 0.03, "toilet", seat)
    tank_d = rng.uniform(0.16, 0.22)
    b.box(T, (0, -d / 2 + tank_d / 2, (bowl_h + h) / 2), (w, tank_d, h - bowl_h), "toilet", m, skip=("-y",))
    b.box(T, (0, -d / 2 + tank_d / 2, bowl_h / 2), (w * 0.5, tank_d, bowl_h), "toilet", m, skip=("-y", "-z"))


def sink_pedestal(b: Builder, T, w, d, h):
    rng = b.rng
    m = b.mat("ceramic", T)
    b.cyl(T, (0, 0, (h - 0.15) / 2), 0.08, 0.07, h - 0.15, "sink", m, skip=("-z", "+z"))
    b.cyl(T, (0, 0, h - 0.075), w / 2, d / 2, 0.15, "sink", m)
    faucet(b, T @ pose(0, -d / 2 + 0.06, h))


def faucet(b: Builder, T):
    m = b.mat("metal", T)
    b.cyl(T, (0, 0, 0.08), 0.015, 0.015, 0.16, "sink", m, skip=("-z",))
    b.box(T, (0, 0.06, 0.15), (0.025, 0.12, 0.025), "sink", m)


def basin_top(b: Builder, T, w, d, h, top_raw, basin_x, basin_w, basin_d, top_mat, basin_mat):
    """A counter top of footprint (w, d) at height h with a sunk basin (raw 'sink') at x=basin_x."""
    t = 0.04
    z = h - t / 2
    x0, x1 = basin_x - basin_w / 2, basin_x + basin_w / 2
    y0, y1 = -basin_d / 2 + 0.02, basin_d / 2 + 0.02
    b.box(T, ((-w / 2 + x0) / 2, 0, z), (x0 + w / 2, d, t), top_raw, top_mat)
    b.box(T, ((x1 + w / 2) / 2, 0, z), (w / 2 - x1, d, t), top_raw, top_mat)
    b.box(T, (basin_x, (y1 + d / 2) / 2, z), (basin_w, d / 2 - y1, t), top_raw, top_mat)
    b.box(T, (basin_x, (-d / 2 + y0) / 2, z), (basin_w, y0 + d / 2, t), top_raw, top_mat)
    depth = 0.16
    b.box(T, (basin_x, (y0 + y1) / 2, h - depth / 2), (basin_w, y1 - y0, depth), "sink", basin_mat, skip=("+z",))
    faucet(b, T @ pose(basin_x, y0 - 0.05, h))


def counter_run(b: Builder, T, w, d, h, raw_top="counter", raw_cab="kitchen cabinet", sink=True, uppers=True):
    """Base cabinets with a counter top (and a sunk sink), optional wall cabinets above."""
    rng = b.rng
    top_m = b.mat("counter", T)
    cab_d = d - 0.03
    Tc = T @ pose(0, -0.015, 0)
    cabinet(b, Tc, w, cab_d, h - 0.04, raw=raw_cab, legs=False)
    if sink:
        bw = min(0.6, w * 0.4)
        bx = rng.uniform(-0.5, 0.5) * (w - bw - 0.1)
        basin_top(b, T, w, d, h, raw_top, bx, bw, min(0.42, d - 0.15), top_m, b.mat("metal", T))
    else:
        b.box(T, (0, 0, h - 0.02), (w, d, 0.04), raw_top, top_m)
    if uppers and rng.random() < 0.8:
        ud, uh = rng.uniform(0.3, 0.38), rng.uniform(0.6, 0.8)
        uz = rng.uniform(1.45, 1.55)
        tabletop_clutter(b, T @ pose(0, 0.1, 0), w * 0.6, d * 0.5, h, n_max=2)
        cabinet(b, T @ pose(0, -d / 2 + ud / 2, uz), w, ud, uh, raw=raw_cab, legs=False, skip_back=True)


def vanity(b: Builder, T, w, d, h):
    counter_run(b, T, w, d, h, raw_top="bathroom counter", raw_cab="bathroom cabinet", uppers=False)


def bathtub(b: Builder, T, w, d, h, shower=True):
    rng = b.rng
    m = b.mat("ceramic", T)
    wall = 0.07
    b.box(T, (0, 0, 0.05), (w - 2 * wall, d - 2 * wall, 0.1), "bathtub", m, skip=("-z",))
    for s in (-1, 1):
        b.box(T, (s * (w / 2 - wall / 2), 0, h / 2), (wall, d, h), "bathtub", m, skip=("-z",))
        b.box(T, (0, s * (d / 2 - wall / 2), h / 2), (w - 2 * wall, wall, h), "bathtub", m,
              skip=("-z", "-y") if s < 0 else ("-z",))
    if shower:
        rod_z = rng.uniform(1.9, 2.05)
        b.cyl(T, (0, d / 2 - 0.04, rod_z), 0.012, 0.012, w, "shower curtain rod", b.mat("metal", T),
              T_extra=np.array([[0, 0, 1, 0], [0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]], float))
        cw = w * rng.uniform(0.35, 0.8)
        top, bottom = rod_z - 0.03, rng.uniform(h - 0.15, h + 0.2)
        cx = rng.choice([-1, 1]) * (w - cw) / 2
        b.curtain(T, (cx, d / 2 - 0.05, (top + bottom) / 2), cw, top - bottom, rng.uniform(0.02, 0.04),
                  rng.uniform(0.1, 0.18), "shower curtain", b.mat("curtain", T))


def trash_can(b: Builder, T, w, d, h):
    m = b.mat("otherfurniture", T)
    b.cyl(T, (0, 0, h / 2), w / 2, w / 2, h, "trash can", m, skip=("-z",))


def ottoman(b: Builder, T, w, d, h):
    m = b.mat("sofa", T)
    if b.rng.random() < 0.5:
        b.cyl(T, (0, 0, h / 2), w / 2, d / 2, h, "ottoman", m, skip=("-z",))
    else:
        b.box(T, (0, 0, h / 2), (w, d, h), "ottoman", m, skip=("-z",))


def bench(b: Builder, T, w, d, h):
    m = b.mat("otherfurniture", T)
    b.box(T, (0, 0, h - 0.03), (w, d, 0.06), "bench", m)
    _legs(b, T, w, d, h - 0.06, 0.03, "bench", m, b.rng)


def floor_lamp(b: Builder, T, w, d, h):
    rng = b.rng
    m = b.mat("metal", T)
    b.cyl(T, (0, 0, 0.015), 0.14, 0.14, 0.03, "lamp", m, skip=("-z",))
    b.cyl(T, (0, 0, h / 2), 0.013, 0.013, h - 0.2, "lamp", m, skip=("-z",))
    r = rng.uniform(0.13, 0.22)
    b.cyl(T, (0, 0, h - 0.12), r, r, 0.24, "lamp", b.mat("fabric", T))


def rug(b: Builder, T, w, d, h):
    b.box(T, (0, 0, h / 2), (w, d, h), "mat", b.mat("carpet", T), skip=("-z",))


def clutter_box(b: Builder, T, w, d, h, raw="box"):
    b.box(T, (0, 0, h / 2), (w, d, h), raw, b.mat("box" if raw == "box" else "plastic", T), skip=("-z",))


def plant(b: Builder, T, w, d, h):
    rng = b.rng
    b.cyl(T, (0, 0, 0.15), w * 0.35, w * 0.35, 0.3, "plant", b.mat("ceramic", T), skip=("-z",))
    leaves = b.mat("fabric", T)
    leaves_m = b.materials[leaves]
    leaves_m.albedo = np.array([rng.uniform(0.05, 0.2), rng.uniform(0.25, 0.5), rng.uniform(0.05, 0.15)])
    leaves_m.albedo2 = leaves_m.albedo * 0.6
    for k in range(int(rng.integers(3, 6))):
        a = rng.uniform(0, 2 * math.pi)
        r = rng.uniform(0.05, w * 0.3)
        centre = (r * math.cos(a), r * math.sin(a), rng.uniform(0.4, h - 0.1))
        b.box(T, centre, (w * 0.5, w * 0.5, rng.uniform(0.1, 0.3)), "plant", leaves, yaw=rng.uniform(0, math.pi))


def _variant(fn, raw):
    """``fn`` with a different ScanNet raw category (same shapes, different label)."""
    return lambda b, T, w, d, h: fn(b, T, w, d, h, raw=raw)


# name: (builder, width range, depth range, height range (m), stands against a wall?)
OBJECTS = {
    "bed": (bed, (0.95, 1.8), (1.95, 2.2), (0.45, 0.65), True),
    "chair": (chair, (0.42, 0.55), (0.44, 0.55), (0.8, 1.0), False),
    "armchair": (armchair, (0.7, 0.95), (0.75, 0.95), (0.75, 0.9), False),
    "sofa": (sofa, (1.5, 2.3), (0.8, 1.0), (0.75, 0.9), True),
    "table": (table, (0.8, 1.7), (0.7, 1.0), (0.72, 0.78), False),
    "coffee table": (_variant(table, "coffee table"), (0.8, 1.3), (0.45, 0.7), (0.35, 0.48), False),
    "end table": (_variant(table, "end table"), (0.4, 0.6), (0.4, 0.6), (0.5, 0.65), True),
    "desk": (desk, (1.0, 1.6), (0.55, 0.8), (0.72, 0.76), True),
    "cabinet": (cabinet, (0.5, 1.2), (0.4, 0.6), (0.6, 2.0), True),
    "file cabinet": (_variant(cabinet, "file cabinet"), (0.4, 0.5), (0.5, 0.65), (0.7, 1.3), True),
    "nightstand": (_variant(cabinet, "nightstand"), (0.4, 0.55), (0.35, 0.45), (0.5, 0.65), True),
    "tv stand": (_variant(cabinet, "tv stand"), (1.0, 1.8), (0.35, 0.5), (0.4, 0.6), True),
    "bookshelf": (bookshelf, (0.6, 1.2), (0.25, 0.4), (1.0, 2.1), True),
    "counter": (counter_run, (1.4, 3.0), (0.6, 0.65), (0.88, 0.94), True),
    "refrigerator": (refrigerator, (0.6, 0.8), (0.62, 0.75), (1.5, 1.9), True),
    "mini fridge": (_variant(refrigerator, "mini fridge"), (0.45, 0.55), (0.45, 0.55), (0.8, 0.9), True),
    "toilet": (toilet, (0.38, 0.45), (0.62, 0.72), (0.72, 0.8), True),
    "sink": (sink_pedestal, (0.48, 0.6), (0.4, 0.48), (0.82, 0.88), True),
    "vanity": (vanity, (0.8, 1.4), (0.5, 0.55), (0.82, 0.88), True),
    "bathtub": (bathtub, (1.5, 1.8), (0.7, 0.8), (0.5, 0.6), True),
    "trash can": (trash_can, (0.25, 0.4), (0.25, 0.4), (0.3, 0.65), False),
    "ottoman": (ottoman, (0.4, 0.7), (0.4, 0.7), (0.38, 0.45), False),
    "bench": (bench, (0.9, 1.5), (0.35, 0.45), (0.42, 0.48), True),
    "lamp": (floor_lamp, (0.3, 0.3), (0.3, 0.3), (1.4, 1.75), True),
    "box": (clutter_box, (0.2, 0.6), (0.2, 0.5), (0.15, 0.5), False),
    "plant": (plant, (0.3, 0.5), (0.3, 0.5), (0.6, 1.2), True),
    "rug": (rug, (1.2, 2.2), (0.8, 1.6), (0.008, 0.015), False),
}
