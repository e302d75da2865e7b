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
