"""gnesf-synth: write a procedural synthetic indoor scene in ScanNet's layout (+ .sens + GT mesh)."""
from __future__ import annotations

import argparse
import time

from tqdm import tqdm

from gnesf_ros.cli.common import out_dir_arg, run_cli, size_arg
from gnesf_ros.data.synthetic import SEED_RANGES, generate_scene
from gnesf_ros.errors import GnesfError


def build_parser() -> argparse.ArgumentParser:
    ranges = ", ".join(f"{k} {r.start}-{r.stop - 1}" for k, r in SEED_RANGES.items())
    p = argparse.ArgumentParser(prog="gnesf-synth", description=__doc__,
                                epilog=f"Seed ranges: {ranges}. Output: OUT/scene<seed:04d>_00/.")
    p.add_argument("--seed", type=int, required=True, help="scene seed (deterministic)")
    p.add_argument("--frames", type=int, default=300, help="frames at 30 Hz (default 300)")
    p.add_argument("--out", type=out_dir_arg, required=True, help="output folder (the scene folder goes inside)")
    p.add_argument("--rooms", type=int, default=1, help="rooms connected by doorways (default 1)")
    p.add_argument("--size", type=size_arg(8), default=(480, 640), help="colour image WxH (default 640x480)")
    return p


def _main(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise GnesfError(f"--seed must be >= 0, got {args.seed}")
    if args.frames < 1:
        raise GnesfError(f"--frames must be >= 1, got {args.frames}")
    if not 1 <= args.rooms <= 64:
        raise GnesfError(f"--rooms must be in 1..64, got {args.rooms}")
    t0 = time.perf_counter()
    with tqdm(total=args.frames, desc=f"scene{args.seed:04d}_00", unit="frame") as bar:
        path = generate_scene(args.out, args.seed, frames=args.frames, size=args.size, rooms=args.rooms,
                              progress=bar.update)
    print(f"{path}  ({args.frames} frames, {time.perf_counter() - t0:.1f} s)")
    return 0


def main(argv=None) -> int:
    return run_cli(_main, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
