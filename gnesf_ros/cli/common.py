"""Shared CLI plumbing: logging setup, argument validation and the one error boundary.

``run_cli`` is the boundary of every command-line tool: an error a person can fix (bad argument,
missing or unreadable file, a path that is a file where a folder is needed, a file that is not
text, a GnesfError from the project) ends in one line ``prog: error: <what>`` and exit 2; anything
else is a bug: its traceback, then ``prog: internal error (a bug, please report it): ...``, exit 1.
The ``*_arg`` helpers below are argparse ``type=`` functions, so bad values are refused before any
work starts, in one line naming the argument.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from gnesf_ros.atomic import check_output_dir, check_output_file
from gnesf_ros.errors import DataError, GnesfError

log = logging.getLogger("gnesf_ros")

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
INTERNAL_ERROR_LINE = "internal error (a bug, please report it)"
# Extensions OpenCV writes (cv2.imwrite picks the encoder from the name).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


# ------------------------------------------------------------------------------------------------
# argparse types: each raises ArgumentTypeError with what is wrong; argparse names the argument.

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


def int_arg(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [minimum, maximum] (either bound optional)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected an integer {_range_text(minimum, maximum)}, got {text!r}")
        return value

    return parse


def float_arg(minimum: float | None = None, maximum: float | None = None, *,
              strict_min: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in [minimum, maximum] (``strict_min``: > minimum)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not math.isfinite(value)
        bad |= minimum is not None and (value <= minimum if strict_min else value < minimum)
        bad |= maximum is not None and value > maximum
        if bad:
            what = _range_text(minimum, maximum, strict_min)
            raise argparse.ArgumentTypeError(f"expected a finite number{' ' + what if what else ''}, got {text!r}")
        return value

    return parse


def _range_text(lo, hi, strict_lo: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if strict_lo else '['}{lo}, {hi}]"
    if lo is not None:
        return f"{'>' if strict_lo else '>='} {lo}"
    return f"<= {hi}" if hi is not None else ""


positive_int = int_arg(1)
nonnegative_int = int_arg(0)
positive_float = float_arg(0.0, strict_min=True)
nonnegative_float = float_arg(0.0)
finite_float = float_arg()


def device_arg(text: str) -> str:
    """argparse type: a torch device string such as cpu, cuda, cuda:1 (whether that device exists
    is checked where the device is used)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - every CLI taking --device needs torch anyway
        import re

        if not re.fullmatch(r"(cpu|cuda|mps|xpu)(:\d+)?", text):
            raise argparse.ArgumentTypeError(f"expected a torch device such as cpu or cuda:0, got {text!r}") from None
        return text
    try:
        torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu or cuda:0, got {text!r}") from None
    return text


def _path_arg(check, text: str) -> Path:
    """argparse type from one of gnesf_ros.atomic's output checks (the one rule for output paths)."""
    try:
        return check(text, what="")
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from None


def out_dir_arg(text: str) -> Path:
    """argparse type: an output folder that exists or can be created (not a file, not under one)."""
    return _path_arg(check_output_dir, text)


def out_file_arg(text: str) -> Path:
    """argparse type: an output file name: not an existing folder, its folder exists or can be created."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file name, got ''")
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; expected a file name")
    return _path_arg(check_output_file, text)


def image_out_arg(text: str) -> Path:
    """argparse type: an output image file name with an extension OpenCV writes (e.g. .png)."""
    p = out_file_arg(text)
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no image extension; expected a file name ending in {', '.join(IMAGE_EXTENSIONS)}")
    return p


# ------------------------------------------------------------------------------------------------
# The error boundary.

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def user_error_message(e: BaseException) -> str | None:
    """The one-line message of an error a person can fix, or None when ``e`` is a bug."""
    if isinstance(e, GnesfError):
        return _one_line(e)
    if isinstance(e, UnicodeDecodeError):
        return _one_line(f"an input file is not UTF-8 text ({e.reason} at byte {e.start})")
    if isinstance(e, OSError):
        reason = e.strerror or (e.args[0] if e.args else type(e).__name__)
        names = [str(os.fsdecode(n)) for n in (e.filename, e.filename2) if n is not None]
        return _one_line(f"{' -> '.join(names)}: {reason}" if names else reason)
    return None


def _use_one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse errors (bad value, missing argument) as one line ``prog: error: ...`` (exit 2), on
    the parser and its sub-command parsers, with a pointer to --help instead of the usage text."""

    def error(message: str, _p=parser):
        _p.exit(EXIT_USER_ERROR, f"{_p.prog}: error: {_one_line(message)} (see {_p.prog} --help)\n")

    parser.error = error
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _use_one_line_errors(sub)


def run_cli(main: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser,
            argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run ``main``: the one error boundary of the CLIs (see the module doc)."""
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _use_one_line_errors(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(main(args) or 0)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - this is the boundary
        message = user_error_message(e)
        if message is not None:
            log.debug("user error", exc_info=True)
            print(f"{parser.prog}: error: {message}", file=sys.stderr)
            return EXIT_USER_ERROR
        traceback.print_exc()
        print(f"{parser.prog}: {INTERNAL_ERROR_LINE}: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
