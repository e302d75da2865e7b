"""gnesf-view: pictures of scenes and meshes (headless, PNG out).

    gnesf-view sheet SCENE --out SHEET.png [--frames K] [--size WxH]
        contact sheet of K frames spread over a ScanNet scene (exported folder or .sens):
        RGB | depth | class labels, with a legend
    gnesf-view mesh MESH.ply --out VIEW.png [--up X,Y,Z] [--size WxH] [--cut H] [--color labels|colors]
        top-down and perspective renders of a labeled mesh side by side, with a legend
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gnesf_ros.cli.common import finite_float, image_out_arg, positive_int, run_cli, size_arg
from gnesf_ros.errors import DataError

log = logging.getLogger("gnesf_ros.view")


def _vector(text: str) -> tuple[float, float, float]:
    try:
        v = tuple(float(x) for x in text.split(","))
    except ValueError:
        v = ()
    if len(v) != 3 or not any(v):
        raise argparse.ArgumentTypeError(f"expected a non-zero vector X,Y,Z, e.g. 0,0,1, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gnesf-view", description="Pictures of scenes and meshes (PNG).")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sheet", help="contact sheet RGB | depth | labels of a ScanNet scene")
    s.add_argument("scene", type=Path, help="ScanNet exported folder or .sens file")
    s.add_argument("--out", type=image_out_arg, required=True, help="output image (.png)")
    s.add_argument("--frames", type=positive_int, default=6, help="number of frames, spread over the scan")
    s.add_argument("--size", type=size_arg(1), default=(240, 320), help="panel size WxH (default 320x240)")
    s.add_argument("--segmenter", type=Path, default=None, metavar="CHECKPOINT_DIR",
                   help="add a column with this Mask2Former checkpoint's 2D prediction, e.g. models/segmenter")
    m = sub.add_parser("mesh", help="top-down + perspective render of a labeled mesh PLY")
    m.add_argument("mesh", type=Path, help="PLY mesh with a per-vertex NYU40 'label' property")
    m.add_argument("--out", type=image_out_arg, required=True, help="output image (.png)")
    m.add_argument("--up", type=_vector, default=(0.0, 0.0, 1.0), help="gravity-up axis (default 0,0,1)")
    m.add_argument("--size", type=size_arg(1), default=(480, 640), help="size of each view WxH (default 640x480)")
    m.add_argument("--cut", type=finite_float, default=2.0,
                   help="cut away surfaces this many metres above the floor (ceilings); <= 0 keeps all")
    m.add_argument("--color", choices=("labels", "colors"), default="labels",
                   help="class colours from the labels, or the mesh's own vertex colours")
    for sp in (s, m):  # also accept -v after the sub-command (run_cli adds it to the main parser)
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return p


def _sheet(args: argparse.Namespace) -> None:
    from gnesf_ros.data.scannet import open_scene
    from gnesf_ros.viz import contact_sheet, save_png

    if args.frames < 1:
        raise DataError(f"--frames must be >= 1, got {args.frames}")
    total = len(open_scene(args.scene, size=args.size))
    if total == 0:
        raise DataError(f"{args.scene}: no frame with a valid pose")
    source = open_scene(args.scene, size=args.size, max_frames=args.frames, stride=max(1, total // args.frames))
    frames = list(source)
    predictions = None
    if args.segmenter is not None:
        from gnesf_ros.segmentation.base import segment_frames
        from gnesf_ros.segmentation.mask2former import Mask2FormerSegmenter

        seg = Mask2FormerSegmenter(args.segmenter, input_size=args.size)
        predictions = list(segment_frames(seg, frames).argmax(-1))
    save_png(args.out, contact_sheet(frames, predictions=predictions,
                                     predictor=f"{args.segmenter.name} prediction" if args.segmenter else ""))
    log.info("wrote %s (%d of %d frames: %s)", args.out, len(frames), total, [f.index for f in frames])


def _mesh(args: argparse.Namespace) -> None:
    from gnesf_ros.data.ply import read_labeled_ply
    from gnesf_ros.viz import overview_sheet, save_png

    mesh = read_labeled_ply(args.mesh)
    if mesh.num_faces == 0:
        raise DataError(f"{args.mesh}: has no faces (a point cloud cannot be rendered as a mesh)")
    img = overview_sheet(mesh, up=args.up, size=args.size, cut_height_m=args.cut if args.cut > 0 else None,
                         color_by=args.color)
    save_png(args.out, img)
    log.info("wrote %s (%d vertices, %d faces)", args.out, mesh.num_vertices, mesh.num_faces)


def _main(args: argparse.Namespace) -> int:
    {"sheet": _sheet, "mesh": _mesh}[args.command](args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
