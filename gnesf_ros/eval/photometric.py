"""Multi-view photometric consistency of rendered (or recorded) RGB-D frames with known poses.

Measures how much colour agreement between views tells about depth, with no network:

* ``warp_errors``: pixels of frame i back-projected with their ground-truth depth (and with
  perturbed depths), projected into frame j, mean |dRGB| (0-255) per pixel;
* ``zncc_sweep``: 5x5 zero-normalised cross-correlation of a patch of frame i with frame j for depth
  hypotheses around the true depth (patch fronto-parallel in camera i at the hypothesised centre
  depth), with flat patches and ties flagged so they can be excluded.

Conventions: K 3x3 pinhole in pixels, pixel centres at integer coordinates; T 4x4 camera-to-world,
OpenCV optical frame (x right, y down, z forward); depth = z in the camera frame, metres (0 = none);
colour images H x W x 3 uint8 (or float on the same 0-255 scale). No ROS imports.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter, minimum_filter, uniform_filter

from gnesf_ros.geometry.multiview import backproject, project

#: Depth perturbations of the warp test: name -> f(true depth metres) -> perturbed depth metres.
PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "x0.95": lambda d: d * 0.95, "x1.05": lambda d: d * 1.05,
    "-5cm": lambda d: d - 0.05, "+5cm": lambda d: d + 0.05,
}


def bilinear(img: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of ``img`` (H x W [x C]) at pixel coordinates uv (... x 2) and a mask of
    samples whose 2x2 neighbourhood lies inside the image; outside samples are 0."""
    h, w = img.shape[:2]
    x, y = uv[..., 0], uv[..., 1]
    inside = (x >= 0) & (y >= 0) & (x <= w - 1) & (y <= h - 1)
    x, y = np.clip(x, 0, w - 1.001), np.clip(y, 0, h - 1.001)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    if img.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    im = img.astype(np.float32, copy=False)
    top = im[y0, x0] * (1 - fx) + im[y0, x0 + 1] * fx
    bot = im[y0 + 1, x0] * (1 - fx) + im[y0 + 1, x0 + 1] * fx
    out = top * (1 - fy) + bot * fy
    mask = inside if img.ndim == 2 else inside[..., None]
    return np.where(mask, out, 0.0).astype(np.float32), inside


def gray(rgb: np.ndarray) -> np.ndarray:
    """H x W float32 mean of the colour channels (0-255 scale)."""
    return rgb.astype(np.float32).mean(-1)


def local_gradient(rgb: np.ndarray) -> np.ndarray:
    """H x W gradient magnitude (DN / pixel) of the 3x3 box-smoothed grey image: ranks texture
    without ranking single noisy pixels first."""
    g = uniform_filter(gray(rgb), 3)
    gy, gx = np.gradient(g)
    return np.hypot(gx, gy)


def textured(grad: np.ndarray, valid: np.ndarray, share: float = 1 / 3) -> np.ndarray:
    """Mask of the ``share`` most textured valid pixels (ranked by ``grad``)."""
    if not valid.any():
        return valid.copy()
    return valid & (grad >= np.quantile(grad[valid], 1 - share))


def depth_edges(depth: np.ndarray, rel: float = 0.03, size: int = 5, crease: float | None = None) -> np.ndarray:
    """H x W mask of pixels within size // 2 pixels of a depth discontinuity (depth range in the
    window above ``rel`` x depth), of a crease (where two planes meet) or of missing depth: their
    colour mixes surfaces or shading, so these are geometry edges, not texture, and the warp at the
    true depth is ill-defined there. Creases: inverse depth is affine in pixel coordinates on a
    plane, so its second differences (relative, ``crease``; None: creases kept) vanish except where
    planes meet."""
    d = np.where(depth > 0, depth, np.inf)
    lo = minimum_filter(d, size)
    hi = maximum_filter(np.where(depth > 0, depth, 0.0), size)
    edge = ~np.isfinite(lo) | (hi - lo > rel * lo) | (minimum_filter(depth, size) <= 0)
    if crease is None:
        return edge
    inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 0.0)
    d2 = np.zeros_like(inv)
    d2[1:-1, :] += np.abs(inv[2:, :] + inv[:-2, :] - 2 * inv[1:-1, :])
    d2[:, 1:-1] += np.abs(inv[:, 2:] + inv[:, :-2] - 2 * inv[:, 1:-1])
    return edge | (maximum_filter(d2 * np.where(depth > 0, depth, 0.0), size) > crease)


def visible(depth_i: np.ndarray, depth_j: np.ndarray, K: np.ndarray, T_i: np.ndarray, T_j: np.ndarray,
            margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of frame i whose ground-truth surface point is seen by frame j (inside the image by
    ``margin`` pixels and not occluded: |z_j - depth_j(uv)| < 2 cm + 2 % of z) and not near a depth
    discontinuity of frame i (``depth_edges``: occlusion boundaries mix two surfaces), and their
    uv in j. Creases stay: their shading is view-independent image structure."""
    h, w = depth_i.shape
    ys, xs = np.mgrid[0:h, 0:w]
    uv, z = project(backproject(depth_i, K, T_i, ys, xs), K, T_j)
    dj, inside = bilinear(depth_j, uv)
    # nearest depth for the occlusion test: bilinear depth blurs across depth edges
    ui = np.clip(np.round(uv[..., 0]).astype(int), 0, w - 1)
    vi = np.clip(np.round(uv[..., 1]).astype(int), 0, h - 1)
    dn = depth_j[vi, ui]
    ok = ((depth_i > 0) & ~depth_edges(depth_i) & inside & (z > 0.05) & (uv[..., 0] >= margin) & (uv[..., 1] >= margin)
          & (uv[..., 0] <= w - 1 - margin) & (uv[..., 1] <= h - 1 - margin) & (dn > 0)
          & (np.abs(z - dn) < 0.02 + 0.02 * z))
    return ok, uv


def warp_errors(rgb_i: np.ndarray, depth_i: np.ndarray, rgb_j: np.ndarray, depth_j: np.ndarray, K: np.ndarray,
                T_i: np.ndarray, T_j: np.ndarray,
                perturbations: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-pixel mean |dRGB| (0-255) between frame i and frame j sampled at the projection of each
    pixel's point at the true depth (key "true") and at each perturbed depth.

    Returns ({name: H x W float32, NaN where not evaluated}, valid H x W): valid pixels are visible
    in j at the true depth and inside j for every perturbation, so all conditions share them."""
    perturbations = PERTURBATIONS if perturbations is None else perturbations
    ok, uv_true = visible(depth_i, depth_j, K, T_i, T_j)
    ys, xs = np.nonzero(ok)
    ref = rgb_i[ys, xs].astype(np.float32)
    d = depth_i[ys, xs].astype(np.float64)
    uvs = {"true": uv_true[ys, xs]}
    for name, f in perturbations.items():
        uvs[name] = project(backproject(f(d), K, T_i, ys, xs), K, T_j)[0]
    keep = np.ones(len(ys), bool)
    vals = {}
    for name, uv in uvs.items():
        v, inside = bilinear(rgb_j, uv)
        keep &= inside
        vals[name] = np.abs(v - ref).mean(1)
    valid = np.zeros_like(ok)
    valid[ys[keep], xs[keep]] = True
    out = {}
    for name, e in vals.items():
        img = np.full(depth_i.shape, np.nan, np.float32)
        img[ys[keep], xs[keep]] = e[keep]
        out[name] = img
    return out, valid


def parallax(depth_i: np.ndarray, K: np.ndarray, T_i: np.ndarray, T_j: np.ndarray, dz: float = 0.05) -> np.ndarray:
    """H x W pixel displacement in frame j when a pixel's depth in frame i moves by +-``dz``
    metres (mean of both signs): how well frame pair (i, j) can resolve depth there. NaN where
    depth_i is missing."""
    h, w = depth_i.shape
    ys, xs = np.mgrid[0:h, 0:w]
    d = np.where(depth_i > 0, depth_i, np.nan).astype(np.float64)
    uv0 = project(backproject(d, K, T_i, ys, xs), K, T_j)[0]
    shift = [np.linalg.norm(project(backproject(np.maximum(d + s, 0.05), K, T_i, ys, xs), K, T_j)[0] - uv0, axis=-1)
             for s in (-dz, dz)]
    return (0.5 * (shift[0] + shift[1])).astype(np.float32)


@dataclass
class SweepResult:
    """ZNCC sweep around the true depth for N pixels of frame i.

    offsets: O hypotheses (metres, added to the true depth); best: N offset (metres) of the ZNCC
    maximum; flat: N reference patch without texture (std below ``flat_std``: ZNCC undefined);
    tie: N maximum not unique (another hypothesis more than ``near`` away scores within ``tie_eps``)."""

    offsets: np.ndarray
    best: np.ndarray
    flat: np.ndarray
    tie: np.ndarray

    def within(self, near: float = 0.05) -> np.ndarray:
        """N mask: the ZNCC optimum lies within ``near`` metres of the true depth."""
        return np.abs(self.best) <= near + 1e-9

    @property
    def excluded(self) -> np.ndarray:
        return self.flat | self.tie


def zncc_sweep(rgb_i: np.ndarray, depth_i: np.ndarray, rgb_j: np.ndarray, K: np.ndarray, T_i: np.ndarray,
               T_j: np.ndarray, ys: np.ndarray, xs: np.ndarray, offsets: np.ndarray,
               radius: int = 2, flat_std: float = 0.5, tie_eps: float = 1e-3, near: float = 0.05) -> SweepResult:
    """ZNCC of (2 radius + 1)^2 grey patches around pixels (ys, xs) of frame i with frame j, for
    the centre depth hypotheses depth_i + offsets (metres). The patch is a fronto-parallel plane
    in camera i at the hypothesised depth (no ground truth inside the patch). Hypotheses that
    leave image j score -inf. Pixels must lie ``radius`` inside frame i."""
    gi, gj = gray(rgb_i), gray(rgb_j)
    dy, dx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    py = ys[:, None] + dy.ravel()[None]  # N x P patch pixel rows
    px = xs[:, None] + dx.ravel()[None]
    ref = gi[py, px]
    ref = ref - ref.mean(1, keepdims=True)
    ref_n = np.sqrt((ref * ref).sum(1))
    flat = ref_n / np.sqrt(ref.shape[1]) < flat_std
    d0 = depth_i[ys, xs].astype(np.float64)
    scores = np.full((len(offsets), len(ys)), -np.inf, np.float32)
    for k, o in enumerate(offsets):
        d = np.maximum(d0 + o, 0.05)[:, None] * np.ones((1, py.shape[1]))
        uv, z = project(backproject(d, K, T_i, py, px), K, T_j)
        v, inside = bilinear(gj, uv)
        ok = inside.all(1) & (z > 0.05).all(1)
        v = v - v.mean(1, keepdims=True)
        den = ref_n * np.sqrt((v * v).sum(1))
        s = (ref * v).sum(1) / np.maximum(den, 1e-6)
        scores[k] = np.where(ok & (den > 1e-6), s, -np.inf)
    arg = np.argmax(scores, 0)
    best = offsets[arg]
    top = scores[arg, np.arange(len(ys))]
    close = scores >= (top - tie_eps)[None]
    far = np.abs(offsets[:, None] - best[None]) > near
    tie = (close & far).any(0) | ~np.isfinite(top)
    return SweepResult(offsets=np.asarray(offsets), best=best, flat=flat, tie=tie)


#: Texture clearly above sensor noise: the grey gradient of a sigma-2 noise image after the 3x3
#: box of ``local_gradient`` is ~0.35 DN/px.
MIN_TEXTURE_GRAD = 3.0
#: A +-5 cm depth error must move the projection by at least this many pixels to be visible.
MIN_PARALLAX_PX = 1.0


def pair_selections(rgb_i: np.ndarray, depth_i: np.ndarray, valid: np.ndarray, K: np.ndarray, T_i: np.ndarray,
                    T_j: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel sets (H x W masks, subsets of ``valid``) of a frame pair used in reports:
    "all"; "textured" (the third with the highest local gradient); "resolvable" (gradient >=
    MIN_TEXTURE_GRAD DN/px and +-5 cm parallax >= MIN_PARALLAX_PX in frame j: where a 5 cm error
    can show at all)."""
    grad = local_gradient(rgb_i)
    par = parallax(depth_i, K, T_i, T_j)
    with np.errstate(invalid="ignore"):
        resolvable = valid & (grad >= MIN_TEXTURE_GRAD) & (par >= MIN_PARALLAX_PX)
    return {"all": valid, "textured": textured(grad, valid), "resolvable": resolvable}


def warp_gain(errors: dict[str, np.ndarray], mask: np.ndarray, near: tuple[str, ...] = ("-5cm", "+5cm")) -> float:
    """mean error at the perturbed depths ``near`` / mean error at the true depth over ``mask``
    (> 1: colour agreement prefers the true depth; 2 = twice the error 5 cm off)."""
    true = float(np.mean(errors["true"][mask]))
    off = float(np.mean([np.mean(errors[k][mask]) for k in near]))
    return off / max(true, 1e-9)
