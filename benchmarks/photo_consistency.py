"""How much multi-view colour consistency tells about depth on the synthetic scenes, per render style.

Learned RGB-only geometry (rgb mode) must find surfaces where views agree. This measures that cue
directly, with no network, on frame pairs (i, j = i + 5..20 frames) of the test scenes at 320x240
with sensor noise on (one noise seed per frame, as generated data has):

(a) warp error: pixels of frame i back-projected with the ground-truth depth, projected into frame j,
    mean |dRGB| (0-255) at the true depth and at depth x0.95, x1.05, -5 cm, +5 cm. Reported:
    ``ratio`` = error(true) / mean error(perturbed) (lower = stronger cue; DESIGN.md convention) and
    ``gain_5cm`` = mean error(+-5 cm) / error(true) (higher = stronger) on all pixels, on the
    textured third (local gradient) and on "resolvable" pixels (gradient >= 3 DN/px and +-5 cm
    moving the projection >= 1 px). Pixels near depth discontinuities or occluded in j are skipped.
(b) ZNCC plane sweep: 5x5 grey patches (fronto-parallel in camera i at the hypothesised depth),
    hypotheses true depth -30..+30 cm in 1 cm steps; share of pixels whose ZNCC optimum lies within
    5 cm of the true depth (chance 11/61) on the textured third and on all pixels, with flat
    patches (std < 0.5 DN) and ties (another hypothesis > 5 cm away within 1e-3) excluded and
    counted.

Styles: ``legacy`` (the old images: vignette 0.18, aliased textures, plain walls), ``camera`` (the
default) and ``camera_ss2`` (camera + 2x2 supersampling); render ms per frame measured here.

    .venv/bin/python benchmarks/photo_consistency.py [--seeds 2000 2001 2002 2003] [--styles legacy camera]
Prints a markdown table; writes benchmarks/results/photo_consistency.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gnesf_ros.data import synth_render as sr
from gnesf_ros.data.synthetic import build_scene, camera_path, default_intrinsics, frame_noise_seed
from gnesf_ros.eval import photometric as ph

log = logging.getLogger("photo_consistency")

SIZE = (240, 320)
OFFSETS = np.round(np.arange(-0.30, 0.3001, 0.01), 3)
NEAR_M = 0.05
GAPS = (5, 10, 15, 20)
SETS = ("all", "textured", "resolvable")


def frame_pairs(frames: int, pairs: int) -> list[tuple[int, int]]:
    """``pairs`` (i, j) spread over a path of ``frames`` frames, gaps cycling through GAPS."""
    starts = np.linspace(10, frames - max(GAPS) - 1, pairs).round().astype(int)
    return [(int(i), int(i) + GAPS[k % len(GAPS)]) for k, i in enumerate(starts)]


def measure_style(scenes: dict, style: sr.RenderStyle, pairs: list[tuple[int, int]], zncc_pixels: int,
                  rng: np.random.Generator, bar: tqdm) -> dict:
    """Warp errors and ZNCC sweep of one style over all scenes and pairs (see module doc)."""
    K = default_intrinsics(SIZE)
    err = {s: {k: [] for k in ("true", *ph.PERTURBATIONS)} for s in SETS}
    hits = {s: [] for s in ("all", "textured")}
    excluded = {s: 0 for s in ("all", "textured")}
    flat = ties = 0
    render_s, renders = 0.0, 0
    for seed, (scene, path) in scenes.items():
        frames = sorted({f for p in pairs for f in p})
        cache = {}
        for f in frames:
            t0 = time.perf_counter()
            cache[f] = scene.render(path[f], K, SIZE, noise_seed=frame_noise_seed(seed, f), style=style)
            render_s += time.perf_counter() - t0
            renders += 1
        for i, j in pairs:
            (rgb_i, d_i, _), (rgb_j, d_j, _) = cache[i], cache[j]
            e, valid = ph.warp_errors(rgb_i, d_i, rgb_j, d_j, K, path[i], path[j])
            sel = ph.pair_selections(rgb_i, d_i, valid, K, path[i], path[j])
            for s in SETS:
                for k in err[s]:
                    err[s][k].append(e[k][sel[s]])
            # ZNCC sweep on a random subset of visible pixels at least 2 px inside frame i
            inner = valid.copy()
            inner[:2], inner[-2:], inner[:, :2], inner[:, -2:] = False, False, False, False
            ys, xs = np.nonzero(inner)
            pick = rng.choice(len(ys), size=min(zncc_pixels, len(ys)), replace=False) if len(ys) else []
            ys, xs = ys[pick], xs[pick]
            if len(ys):
                res = ph.zncc_sweep(rgb_i, d_i, rgb_j, K, path[i], path[j], ys, xs, OFFSETS, near=NEAR_M)
                tex = sel["textured"][ys, xs]
                ok = ~res.excluded
                hits["all"].append(res.within(NEAR_M)[ok])
                hits["textured"].append(res.within(NEAR_M)[ok & tex])
                excluded["all"] += int(res.excluded.sum())
                excluded["textured"] += int((res.excluded & tex).sum())
                flat += int(res.flat.sum())
                ties += int((res.tie & ~res.flat).sum())
            bar.update(1)
    out: dict = {"render_ms_per_frame": 1e3 * render_s / max(renders, 1), "frames_rendered": renders, "warp": {}}
    for s in SETS:
        e = {k: np.concatenate(v) for k, v in err[s].items()}
        n = len(e["true"])
        means = {k: float(v.mean()) if n else float("nan") for k, v in e.items()}
        pert = float(np.mean([means[k] for k in ph.PERTURBATIONS]))
        out["warp"][s] = {"pixels": n, "mean_abs_drgb": means,
                          "ratio": means["true"] / pert if n else float("nan"),
                          "gain_5cm": 0.5 * (means["-5cm"] + means["+5cm"]) / means["true"] if n else float("nan")}
    out["zncc"] = {"offsets_m": [float(OFFSETS[0]), float(OFFSETS[-1]), 0.01], "near_m": NEAR_M,
                   "chance": float(np.mean(np.abs(OFFSETS) <= NEAR_M + 1e-9)),
                   "flat_excluded": flat, "ties_excluded": ties}
    for s in ("all", "textured"):
        h = np.concatenate(hits[s]) if hits[s] else np.zeros(0, bool)
        out["zncc"][s] = {"pixels": int(len(h)), "excluded": excluded[s],
                          "within_5cm": float(h.mean()) if len(h) else float("nan")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2000, 2001, 2002, 2003])
    ap.add_argument("--styles", nargs="+", default=list(sr.STYLES), choices=list(sr.STYLES))
    ap.add_argument("--pairs", type=int, default=10, help="frame pairs per scene")
    ap.add_argument("--frames", type=int, default=300, help="camera path length per scene")
    ap.add_argument("--zncc-pixels", type=int, default=2000, help="pixels per pair in the ZNCC sweep")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "photo_consistency.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t_start = time.perf_counter()
    scenes = {}
    for seed in args.seeds:
        scene = build_scene(seed)
        scenes[seed] = (scene, camera_path(scene, args.frames, seed))
    pairs = frame_pairs(args.frames, args.pairs)
    log.info("pairs per scene: %s", pairs)
    results = {}
    with tqdm(total=len(args.styles) * len(scenes) * len(pairs), desc="pairs", unit="pair") as bar:
        for name in args.styles:
            bar.set_postfix_str(name)
            results[name] = measure_style(scenes, sr.STYLES[name], pairs, args.zncc_pixels,
                                          np.random.default_rng(0), bar)
            results[name]["style"] = {k: getattr(sr.STYLES[name], k) for k in sr.RenderStyle.__dataclass_fields__}
            log.info("%s: %.0f ms/frame", name, results[name]["render_ms_per_frame"])
    res = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "python": platform.python_version()},
           "args": vars(args), "size_hw": list(SIZE), "pairs": pairs, "noise": "sigma 2 DN, one seed per frame",
           "styles": results, "runtime_s": time.perf_counter() - t_start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"## Photometric cue, seeds {args.seeds}, {len(pairs)} pairs/scene, {SIZE[1]}x{SIZE[0]}, noise on\n")
    print("| style | ms/frame | warp ratio all | ratio textured | gain +-5cm textured | gain +-5cm resolvable "
          "(px) | ZNCC within 5 cm textured | ZNCC all (excluded) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        w, z = r["warp"], r["zncc"]
        print(f"| {name} | {r['render_ms_per_frame']:.0f} | {w['all']['ratio']:.3f} | {w['textured']['ratio']:.3f} | "
              f"{w['textured']['gain_5cm']:.2f} | {w['resolvable']['gain_5cm']:.2f} ({w['resolvable']['pixels']}) | "
              f"{z['textured']['within_5cm']:.3f} | {z['all']['within_5cm']:.3f} ({z['all']['excluded']}) |")
    print(f"\nZNCC chance {results[next(iter(results))]['zncc']['chance']:.3f}; runtime {res['runtime_s']:.0f} s")


if __name__ == "__main__":
    main()
