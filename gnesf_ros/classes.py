"""The 20-class ScanNet table (names, NYU40 ids, colours), loaded from config/scannet20.yaml.

Class *index* (0..C-1) is the position in probability vectors; NYU40 ids are what ScanNet
files and PLY ``label`` properties carry. ``IGNORE`` (255) marks pixels/vertices outside the table.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from gnesf_ros.paths import config_dir

IGNORE = 255


@dataclass(frozen=True)
class ClassTable:
    names: tuple[str, ...]
    nyu40_ids: tuple[int, ...]
    colors: np.ndarray  # C x 3 uint8 RGB

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def nyu40_to_index_lut(self) -> np.ndarray:
        """256-entry LUT: NYU40 id -> class index, IGNORE elsewhere (id 0 = unannotated)."""
        lut = np.full(256, IGNORE, np.uint8)
        for idx, nyu in enumerate(self.nyu40_ids):
            lut[nyu] = idx
        return lut

    def index_to_nyu40(self, index: np.ndarray) -> np.ndarray:
        """Class indices -> NYU40 ids; IGNORE maps to 0 (unannotated)."""
        lut = np.zeros(256, np.int32)
        lut[: self.num_classes] = self.nyu40_ids
        return lut[np.asarray(index, np.int64).clip(0, 255)]

    def colorize(self, index: np.ndarray, ignore_color=(0, 0, 0)) -> np.ndarray:
        """Class-index image (any shape) -> RGB uint8 of the same shape + (3,)."""
        pal = np.zeros((256, 3), np.uint8)
        pal[:] = ignore_color
        pal[: self.num_classes] = self.colors
        return pal[np.asarray(index, np.int64).clip(0, 255)]


def load_class_table(path: str | Path | None = None) -> ClassTable:
    path = Path(path) if path else config_dir() / "scannet20.yaml"
    data = yaml.safe_load(path.read_text())
    cls = data["classes"]
    return ClassTable(
        names=tuple(c["name"] for c in cls),
        nyu40_ids=tuple(int(c["nyu40"]) for c in cls),
        colors=np.array([c["color"] for c in cls], np.uint8),
    )


@lru_cache(maxsize=1)
def default_class_table() -> ClassTable:
    return load_class_table()
