"""gnesf-bag: convert ScanNet scenes to ROS 2 bags, inspect and play them.

  gnesf-bag convert INPUT OUT [--format mcap|sqlite3] [--rate-hz 30 | --stamps-from-file] [--size WxH]
                    [--labels [--labels-topic TOPIC]]
  gnesf-bag play BAG [--rate R] [--loop] [--clock] [--topics T ...] [--wait-for-subscribers SEC]
  gnesf-bag info BAG
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gnesf_ros.cli.common import nonnegative_float, positive_float, positive_int, run_cli, size_arg
from gnesf_ros.errors import GnesfError
from gnesf_ros.ros.bag import BagLayout

DEFAULT_WAIT_FOR_SUBSCRIBERS_S = 5.0  # = gnesf_ros.ros.bag_play's (not imported here: it loads rclpy)


def _convert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gnesf_ros.data.scannet import open_scene
    from gnesf_ros.ros.bag import write_bag

    if Path(args.out).exists():  # before reading the scene; write_bag checks again before it moves the bag in
        raise GnesfError(f"{args.out} exists already; choose a new output path")
    scene = open_scene(args.input, size=args.size, max_frames=args.max_frames, stride=args.stride)
    frames = tqdm(scene, total=len(scene), desc="convert", unit="frame", disable=not sys.stderr.isatty())
    summary = write_bag(frames, args.out, storage=args.format,
                        rate_hz=None if args.stamps_from_file else args.rate_hz, start_time_s=args.start_time,
                        layout=BagLayout(segmentation_topic=args.labels_topic), labels=args.labels)
    print(summary.format())
    return 0


def _play(args: argparse.Namespace) -> int:
    import signal
    import threading

    from gnesf_ros.ros.bag_play import play

    # SIGINT/SIGTERM end playback cleanly through the stop event (rclpy's own handlers stay off).
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stats = play(args.bag, rate=args.rate, loop=args.loop, clock=args.clock, clock_hz=args.clock_hz,
                 topics=args.topics, delay_s=args.delay, wait_for_subscribers_s=args.wait_for_subscribers,
                 stop=stop, handle_signals=False)
    total = sum(stats.published.values())
    print(f"published {total} messages in {stats.wall_s:.2f} s ({stats.loops} pass(es)): "
          + ", ".join(f"{t} {n}" for t, n in sorted(stats.published.items())))
    return 0


def _info(args: argparse.Namespace) -> int:
    from gnesf_ros.ros.bag import bag_summary

    # metadata.yaml and the data files it lists, read message by message (MCAP chunk CRCs checked):
    # a missing, empty, truncated or corrupt file, or counts that differ, is a DataError
    print(bag_summary(args.bag, verify=True).format())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gnesf-bag", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="ScanNet exported folder or .sens -> ROS 2 bag")
    c.add_argument("input", help="ScanNet scene: exported folder or .sens file")
    c.add_argument("out", help="output bag directory (must not exist)")
    c.add_argument("--format", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default mcap)")
    c.add_argument("--rate-hz", type=positive_float, default=30.0, help="stamps at this rate (default 30 Hz, ScanNet's)")
    c.add_argument("--stamps-from-file", action="store_true", help="use the scene's own frame times instead")
    c.add_argument("--start-time", type=nonnegative_float, default=1_600_000_000.0, help="stamp of the first frame (s)")
    c.add_argument("--size", type=size_arg(1), default=None, help="resize frames to WxH (default native colour size)")
    c.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many frames")
    c.add_argument("--stride", type=positive_int, default=1, help="use every Nth frame")
    c.add_argument("--labels", action="store_true",
                   help="also write the scene's label images (mono8 class indices, 255 unknown) on --labels-topic, "
                        "stamped like the colour images: a recorded external segmenter")
    c.add_argument("--labels-topic", default=BagLayout.segmentation_topic,
                   help=f"topic of --labels (default {BagLayout.segmentation_topic}, the node's segmentation_topic)")
    c.set_defaults(func=_convert)
    pl = sub.add_parser("play", help="publish a bag over ROS 2 (rclpy)")
    pl.add_argument("bag")
    pl.add_argument("--rate", type=positive_float, default=1.0, help="playback speed factor")
    pl.add_argument("--loop", action="store_true", help="repeat until interrupted")
    pl.add_argument("--clock", action="store_true", help="publish /clock (for use_sim_time)")
    pl.add_argument("--clock-hz", type=positive_float, default=40.0, help="/clock rate between messages")
    pl.add_argument("--topics", nargs="+", default=None, help="only these topics")
    pl.add_argument("--delay", type=nonnegative_float, default=0.0, help="seconds to sleep after the wait, before playing")
    pl.add_argument("--wait-for-subscribers", type=nonnegative_float, default=DEFAULT_WAIT_FOR_SUBSCRIBERS_S, metavar="SEC",
                    help="before playing, wait up to SEC (default %(default)s; 0 = don't wait) until the subscribers "
                         "that exist are matched on every topic (topics without subscribers are not waited for); "
                         "with --clock, /clock holds the bag's first time meanwhile")
    pl.set_defaults(func=_play)
    i = sub.add_parser("info", help="topics, types, counts, QoS of a bag")
    i.add_argument("bag")
    i.set_defaults(func=_info)
    return p


def main(argv=None) -> int:
    return run_cli(lambda args: args.func(args), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
