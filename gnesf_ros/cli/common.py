"""Shared CLI plumbing: logging setup and user-error handling (message, exit 2, no traceback)."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from gnesf_ros.errors import GnesfError

log = logging.getLogger("gnesf_ros")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


def size_arg(min_px: int = 1) -> Callable[[str], tuple[int, int]]:
    """argparse type for 'WxH' (width first, e.g. 640x480) -> (height, width), each >= ``min_px``."""

    def parse(text: str) -> tuple[int, int]:
        try:
            w, h = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
        if w < min_px or h < min_px:
            raise argparse.ArgumentTypeError(f"image size must be at least {min_px}x{min_px}, got {text!r}")
        return h, w

    return parse


def run_cli(main: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser,
            argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``main``; GnesfError/OSError -> one readable line on stderr and exit 2."""
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(main(args) or 0)
    except GnesfError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"{parser.prog}: error: {e.strerror or e}: {e.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
