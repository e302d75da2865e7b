"""Segmentation backends: 2D mIoU on held-out synthetic test scenes and ms per frame.

Backends: the shipped Mask2Former (models/segmenter) and the noisy oracle (default 65 % target).
mIoU: argmax vs rendered GT labels of views of test-split scenes (seeds 2000+), 240x320.
Speed: median ms per frame over batches of 4 frames at 240x320 and 480x640; Mask2Former runs with
its input at the frame size and, as deployed by default, at 240x320 with probabilities upsampled.
Timings are also given relative to a reference convolution measured in the same run.

    .venv/bin/python benchmarks/segmentation.py [--scenes 4] [--views 8] [--threads 1]
Prints a markdown table; writes benchmarks/results/segmentation.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from gnesf_ros.classes import default_class_table
from gnesf_ros.config import SegmenterConfig
from gnesf_ros.segmentation import build_segmenter, segment_frames
from gnesf_ros.segmentation.train import miou_on_frames, render_views, seed_range

SIZES = ((240, 320), (480, 640))


def machine_info(threads: int) -> dict:
    import transformers

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))


def reference_ms(repeats: int) -> float:
    """Machine-speed reference: a 3->32 3x3 convolution on one 480x640 image."""
    conv = torch.nn.Conv2d(3, 32, 3, padding=1)
    x = torch.randn(1, 3, 480, 640)
    with torch.inference_mode():
        return median_ms(lambda: conv(x), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="models/segmenter")
    ap.add_argument("--oracle-miou", type=float, default=65.0)
    ap.add_argument("--scenes", type=int, default=4, help="test scenes for mIoU")
    ap.add_argument("--views", type=int, default=8, help="views per test scene")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "segmentation.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    table = default_class_table()
    seeds = list(seed_range("test"))[: args.scenes]
    eval_frames = [f for s in seeds for f in render_views(s, args.views, SIZES[0], table)]
    timing_frames = {size: render_views(seeds[0], 4, size, table)[:4] for size in SIZES}
    ref = reference_ms(args.repeats)

    def m2f(input_size):
        return build_segmenter(SegmenterConfig(checkpoint=args.checkpoint, input_height=input_size[0],
                                               input_width=input_size[1], threads=args.threads, batch_size=4))

    rows = []
    oracle = build_segmenter(SegmenterConfig(backend="oracle", oracle_miou=args.oracle_miou))
    for name, make, fixed_input in (("mask2former (input = frame size)", m2f, None),
                                    ("mask2former (input 240x320)", m2f, SIZES[0]),
                                    (f"oracle (target {args.oracle_miou:g})", lambda _s: oracle, None)):
        row = {"backend": name}
        seg = make(fixed_input or SIZES[0])
        if fixed_input is None or name.startswith("oracle"):
            res = miou_on_frames(seg, eval_frames, table)
            row["miou_2d"] = round(100 * res["miou"], 1)
            row["per_class_iou"] = {k: (None if v is None else round(100 * v, 1)) for k, v in res["per_class_iou"].items()}
        for size in SIZES:
            seg_s = make(fixed_input or size)
            frames = timing_frames[size]
            ms = median_ms(lambda: segment_frames(seg_s, frames), args.repeats) / len(frames)
            row[f"ms_{size[0]}x{size[1]}"] = round(ms, 1)
            row[f"ratio_{size[0]}x{size[1]}"] = round(ms / ref, 2)
        rows.append(row)

    result = {"benchmark": "segmentation", "commit": git_commit(), "machine": machine_info(args.threads),
              "reference_conv_ms": round(ref, 2), "test_seeds": seeds, "eval_views": len(eval_frames),
              "eval_size": list(SIZES[0]), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"Segmentation, {len(eval_frames)} views of test scenes {seeds} (240x320); {args.threads} thread(s); "
          f"reference conv {ref:.1f} ms\n")
    print("| backend | 2D mIoU (%) | ms/frame 240x320 | ms/frame 480x640 | x ref 240x320 | x ref 480x640 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        miou = r.get("miou_2d", "-")
        print(f"| {r['backend']} | {miou} | {r['ms_240x320']} | {r['ms_480x640']} | "
              f"{r['ratio_240x320']} | {r['ratio_480x640']} |")


if __name__ == "__main__":
    main()
