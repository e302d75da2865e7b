"""Locate the package's data (config/, models/) in a source checkout, a pip install or an ament prefix."""
from __future__ import annotations

import sys
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _candidates(sub: str) -> list[Path]:
    return [
        _PKG.parent / sub,  # source checkout / editable install
        Path(sys.prefix) / "share" / "gnesf_ros" / sub,  # pip install (data_files) / ament prefix
    ]


def data_dir(sub: str) -> Path:
    for c in _candidates(sub):
        if c.is_dir():
            return c
    raise FileNotFoundError(f"gnesf_ros data folder '{sub}/' not found; looked in: "
                            + ", ".join(str(c) for c in _candidates(sub)))


def config_dir() -> Path:
    return data_dir("config")


def models_dir() -> Path:
    return data_dir("models")
