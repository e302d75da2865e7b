"""gnesf-eval: score a predicted labeled mesh against a ground-truth one.

    gnesf-eval --pred PRED.ply --gt GT.ply [--json OUT.json] [--threshold 0.05]
               [--sampling vertices|surface] [--downsample 0.02]

Prints markdown tables: 3D mIoU / mAcc / per-class IoU (nearest-vertex label transfer, Atlas /
GNeSF protocol) and Acc / Comp / Prec / Recall / F-score (NeuralRecon protocol).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from gnesf_ros.cli.common import nonnegative_float, out_file_arg, positive_float, run_cli
from gnesf_ros.config import EvalConfig
from gnesf_ros.data.ply import read_labeled_ply
from gnesf_ros.errors import DataError
from gnesf_ros.eval.metrics import evaluate_meshes, format_markdown

log = logging.getLogger("gnesf_ros.eval")


def build_parser() -> argparse.ArgumentParser:
    d = EvalConfig()
    p = argparse.ArgumentParser(prog="gnesf-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--pred", required=True, type=Path, help="predicted mesh PLY (per-vertex NYU40 'label')")
    p.add_argument("--gt", required=True, type=Path, help="ground-truth mesh PLY, e.g. <scene>_vh_clean_2.labels.ply")
    p.add_argument("--json", type=out_file_arg, help="also write the metrics as JSON here")
    p.add_argument("--threshold", type=positive_float, default=d.threshold_m, help="F-score threshold in metres")
    p.add_argument("--sampling", choices=("vertices", "surface"), default=d.sampling,
                   help="mesh points compared: vertices, or uniform samples on the faces")
    p.add_argument("--downsample", type=nonnegative_float, default=d.downsample_m,
                   help="voxel down-sampling of both point sets in metres (0 = off)")
    return p


def _main(args: argparse.Namespace) -> int:
    cfg = EvalConfig(threshold_m=args.threshold, sampling=args.sampling, downsample_m=args.downsample)
    if cfg.threshold_m <= 0:
        raise DataError(f"--threshold must be positive, got {cfg.threshold_m}")
    t0 = time.perf_counter()
    pred, gt = read_labeled_ply(args.pred), read_labeled_ply(args.gt)
    if gt.num_vertices == 0:
        raise DataError(f"ground-truth mesh {args.gt} has no vertices")
    results = evaluate_meshes(pred, gt, cfg=cfg)
    results["files"] = {"pred": str(args.pred), "gt": str(args.gt)}
    log.info("evaluated %d GT / %d predicted vertices in %.2f s", gt.num_vertices, pred.num_vertices,
             time.perf_counter() - t0)
    print(format_markdown({"semantic": results["semantic"], "mesh": results["mesh"]},
                          title=f"{args.pred.name} vs {args.gt.name}"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        log.info("wrote %s", args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
