"""MVS depth network on validation scenes: F-score at 5 cm of the fused geometry per checkpoint and
confidence threshold (the model card's F-score curve; picks ``model.mvs_min_confidence``).

Validation seeds 1000-1999 are neither train (0-999) nor test (2000+) scenes. Each scene's keyframes
stream through ``Mapper`` in mode rgb with ``model.geometry: mvs`` (depth never read), semantics by the
plain mean of the views (geometry is what is measured here); the GT is culled to what the keyframes
observe (benchmarks/ablation.py).

    .venv/bin/python benchmarks/mvs_validation.py --weights data/mvs/mvs_depth.step*.pt [--seeds 1000 1001]
        [--min-confidence 0.1 0.2 0.3 0.5] [--sources 2]
Prints markdown; writes benchmarks/results/mvs_validation.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ablation import render_test_scene, run_mapper  # noqa: E402

from gnesf_ros.classes import default_class_table  # noqa: E402
from gnesf_ros.config import ModelConfig  # noqa: E402
from gnesf_ros.eval.metrics import evaluate_meshes  # noqa: E402
from gnesf_ros.model.mvs import MvsDepthEstimator  # noqa: E402
from gnesf_ros.model.train_mvs import load_depth_net  # noqa: E402
from gnesf_ros.segmentation.oracle import NoisyOracleSegmenter  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def _step(path: str) -> int:
    m = re.search(r"step(\d+)", Path(path).name)
    return int(m.group(1)) if m else -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="+", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--min-confidence", type=float, nargs="+", default=[0.2])
    ap.add_argument("--agreement", type=float, nargs="+", default=[0.05], help="model.mvs_agreement values")
    ap.add_argument("--unverified-weight", type=float, default=0.5)
    ap.add_argument("--sources", type=int, default=ModelConfig.mvs_sources)
    ap.add_argument("--refine-steps", type=int, default=ModelConfig.mvs_refine_steps)
    ap.add_argument("--out", default=str(RESULTS / "mvs_validation.json"))
    args = ap.parse_args()
    if any(not 1000 <= s < 2000 for s in args.seeds):
        ap.error("validation scenes are seeds 1000-1999")
    import torch

    torch.set_num_threads(2)
    table = default_class_table()
    oracle = NoisyOracleSegmenter(65.0, seed=0, class_table=table)
    scenes = [render_test_scene(s, args.frames, 0) for s in args.seeds]
    rows = []
    for w in sorted(args.weights, key=_step):
        est = MvsDepthEstimator(load_depth_net(w), args.sources, refine_steps=args.refine_steps)
        for thr, agree in itertools.product(args.min_confidence, args.agreement):
            per = []
            for sc in scenes:
                mesh, _, _, busy, stages = run_mapper(sc, "rgb:mvs", "mean", None, oracle, est,
                                                      model_overrides={"mvs_min_confidence": thr, "voting": "mean",
                                                                       "mvs_agreement": agree,
                                                                       "mvs_unverified_weight": args.unverified_weight})
                per.append(evaluate_meshes(mesh, sc["gt_mesh"], table)["mesh"])
            row = {"weights": w, "step": _step(w), "min_confidence": thr, "agreement": agree,
                   **{k: float(np.mean([p[k] or 0.0 for p in per])) for k in ("prec", "recall", "f_score")},
                   "per_scene_f": [p["f_score"] for p in per]}
            rows.append(row)
            print(f"{Path(w).name} conf>={thr} agreement {agree}: F {row['f_score']:.3f} (P {row['prec']:.3f} R {row['recall']:.3f})",
                  file=sys.stderr, flush=True)
    res = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "args": vars(args), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print("| weights | step | min confidence | agreement | Prec | Recall | F@5cm |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['weights']).name} | {r['step']} | {r['min_confidence']} | {r['agreement']} | {r['prec']:.3f} | {r['recall']:.3f} "
              f"| {r['f_score']:.3f} |")


if __name__ == "__main__":
    main()
