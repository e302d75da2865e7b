"""Surface materials of the synthetic scenes: albedo families with per-object variation.

A material is a base albedo, a second colour, a procedural texture evaluated in the owning
object's frame (so it moves with the object) and a specular weight. Class palettes draw from
several families each (a table may be oak, white laminate or black metal), so colour alone
does not give the class.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

# Texture kinds (evaluated in synth_render).
PLAIN, WOOD, TILES, FABRIC, STONE, PICTURE, SKY, PLANKS = range(8)


@dataclass
class Material:
    """albedo/albedo2: RGB in [0, 1] (linear); texture: one of the kinds above; scale_m: feature
    size of the texture in metres; contrast: 0..1; specular: Blinn-Phong weight;
    T_obj_world: 4x4 world -> texture (object) frame; seed: pattern offset."""

    albedo: np.ndarray
    albedo2: np.ndarray
    texture: int
    scale_m: float
    contrast: float
    specular: float
    T_obj_world: np.ndarray = field(default_factory=lambda: np.eye(4))
    seed: int = 0


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))))


def _family(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int, float, float, float]:
    """(albedo, albedo2, texture, scale_m, contrast, specular) of one material family."""
    u = rng.uniform
    if name == "wood":
        base = _hsv(u(0.05, 0.1), u(0.35, 0.75), u(0.25, 0.8))
        return base, base * u(0.55, 0.8), WOOD, u(0.004, 0.012), u(0.3, 0.7), u(0.05, 0.25)
    if name == "planks":
        base = _hsv(u(0.05, 0.11), u(0.3, 0.7), u(0.3, 0.75))
        return base, base * u(0.6, 0.85), PLANKS, u(0.09, 0.2), u(0.3, 0.6), u(0.05, 0.2)
    if name == "paint":  # walls: mostly whites and pale tints
        base = _hsv(u(0, 1), u(0.0, 0.25) * (rng.random() < 0.6), u(0.65, 0.95))
        return base, base * 0.9, STONE, u(0.3, 0.8), u(0.05, 0.15), 0.02
    if name == "laminate":  # white / grey / black / pastel painted boards
        base = _hsv(u(0, 1), u(0, 0.35), rng.choice([u(0.08, 0.2), u(0.45, 0.7), u(0.8, 0.95)]))
        return base, base * 0.85, PLAIN, 0.5, 0.05, u(0.1, 0.4)
    if name == "fabric":
        base = _hsv(u(0, 1), u(0.1, 0.8), u(0.15, 0.85))
        return base, base * u(0.6, 0.9), FABRIC, u(0.002, 0.006), u(0.2, 0.5), 0.02
    if name == "leather":
        base = _hsv(u(0.0, 0.12), u(0.3, 0.8), u(0.08, 0.5))
        return base, base * 0.8, STONE, u(0.02, 0.06), u(0.1, 0.25), u(0.2, 0.5)
    if name == "metal":
        base = np.full(3, u(0.3, 0.85)) * _hsv(u(0, 1), u(0, 0.08), 1.0)
        return base, base * 0.9, STONE, u(0.01, 0.05), 0.05, u(0.5, 0.9)
    if name == "ceramic":
        base = _hsv(u(0, 1), u(0, 0.12), u(0.8, 0.97))
        return base, base * 0.95, PLAIN, 0.5, 0.02, u(0.5, 0.8)
    if name == "stone":  # counter tops
        base = _hsv(u(0, 1), u(0, 0.25), rng.choice([u(0.1, 0.3), u(0.5, 0.9)]))
        return base, base * u(0.5, 0.8), STONE, u(0.01, 0.04), u(0.3, 0.6), u(0.3, 0.6)
    if name == "tiles":
        base = _hsv(u(0, 1), u(0, 0.3), u(0.45, 0.95))
        return base, base * u(0.4, 0.7), TILES, u(0.2, 0.6), u(0.2, 0.5), u(0.2, 0.5)
    if name == "carpet":
        base = _hsv(u(0, 1), u(0.05, 0.5), u(0.2, 0.7))
        return base, base * u(0.7, 0.9), FABRIC, u(0.003, 0.008), u(0.2, 0.4), 0.0
    if name == "plastic":
        base = _hsv(u(0, 1), u(0.2, 0.9), u(0.2, 0.9))
        return base, base * 0.9, PLAIN, 0.5, 0.03, u(0.3, 0.6)
    if name == "picture":
        base = _hsv(u(0, 1), u(0.3, 0.9), u(0.3, 0.9))
        return base, _hsv(u(0, 1), u(0.3, 0.9), u(0.2, 0.9)), PICTURE, u(0.05, 0.25), 1.0, 0.1
    if name == "sky":
        return _hsv(u(0.55, 0.62), u(0.15, 0.45), u(0.85, 1.0)), np.array([0.95, 0.95, 0.95]), SKY, 1.0, 1.0, 0.6
    if name == "cardboard":
        base = _hsv(u(0.07, 0.11), u(0.35, 0.6), u(0.45, 0.75))
        return base, base * 0.8, STONE, 0.05, 0.1, 0.0
    raise ValueError(f"unknown material family {name!r}")


# Per class: families with weights. Shared families between classes keep colour ambiguous.
CLASS_FAMILIES: dict[str, tuple[tuple[str, float], ...]] = {
    "wall": (("paint", 1.0),),
    "floor": (("planks", 0.45), ("tiles", 0.3), ("carpet", 0.25)),
    "ceiling": (("paint", 1.0),),
    "door": (("wood", 0.5), ("laminate", 0.5)),
    "frame": (("laminate", 0.7), ("wood", 0.3)),
    "table": (("wood", 0.5), ("laminate", 0.35), ("stone", 0.15)),
    "desk": (("wood", 0.45), ("laminate", 0.55)),
    "chair": (("wood", 0.3), ("fabric", 0.35), ("plastic", 0.2), ("leather", 0.15)),
    "sofa": (("fabric", 0.7), ("leather", 0.3)),
    "bed": (("fabric", 1.0),),
    "cabinet": (("wood", 0.45), ("laminate", 0.55)),
    "bookshelf": (("wood", 0.55), ("laminate", 0.45)),
    "counter": (("stone", 0.6), ("wood", 0.25), ("laminate", 0.15)),
    "refrigerator": (("laminate", 0.5), ("metal", 0.5)),
    "ceramic": (("ceramic", 1.0),),
    "curtain": (("fabric", 1.0),),
    "metal": (("metal", 1.0),),
    "otherfurniture": (("wood", 0.25), ("plastic", 0.3), ("fabric", 0.2), ("metal", 0.15), ("laminate", 0.1)),
    "box": (("cardboard", 0.6), ("plastic", 0.4)),
    "picture": (("picture", 1.0),),
    "glass": (("sky", 1.0),),
}


def sample_material(kind: str, rng: np.random.Generator, T_world_obj: np.ndarray | None = None) -> Material:
    """A random material for ``kind`` (a key of CLASS_FAMILIES or a family name); its texture
    frame is the object frame ``T_world_obj`` (object -> world)."""
    fams = CLASS_FAMILIES.get(kind, ((kind, 1.0),))
    names = [f for f, _ in fams]
    w = np.array([p for _, p in fams], float)
    fam = names[int(rng.choice(len(names), p=w / w.sum()))]
    albedo, albedo2, tex, scale, contrast, spec = _family(fam, rng)
    return Material(albedo=albedo, albedo2=albedo2, texture=tex, scale_m=float(scale),
                    contrast=float(contrast), specular=float(spec),
                    T_obj_world=np.eye(4) if T_world_obj is None else np.linalg.inv(T_world_obj),
                    seed=int(rng.integers(0, 2**20)))
