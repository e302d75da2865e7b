"""ScanNet label ids -> 20-class indices.

ScanNet's ``label-filt/*.png`` hold raw ScanNet ids; ``scannetv2-labels.combined.tsv`` maps them
to NYU40 (columns ``id``, ``raw_category``, ``category``, ``count``, ``nyu40id``, ...), and the
class table (gnesf_ros.classes) maps NYU40 to class indices (255 = ignore).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from gnesf_ros.classes import IGNORE, ClassTable, default_class_table
from gnesf_ros.errors import DataError

LABEL_TSV_NAME = "scannetv2-labels.combined.tsv"
LUT_SIZE = 65536  # label-filt PNGs are uint16: any value indexes the LUT


def load_label_map(tsv_path: str | Path | None = None, table: ClassTable | None = None) -> np.ndarray:
    """LUT (65536 uint8) raw label value -> class index (IGNORE outside the table).

    With ``tsv_path`` the values are ScanNet raw ids mapped through the tsv's ``nyu40id`` column;
    without it they are taken to be NYU40 ids already.
    """
    table = table or default_class_table()
    nyu_to_index = table.nyu40_to_index_lut()
    lut = np.full(LUT_SIZE, IGNORE, np.uint8)
    if tsv_path is None:
        lut[: nyu_to_index.size] = nyu_to_index
        return lut
    path = Path(tsv_path)
    if not path.is_file():
        raise DataError(f"label map not found: {path} (expected ScanNet's {LABEL_TSV_NAME})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); expected ScanNet's "
                        f"{LABEL_TSV_NAME}") from None
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = {"id", "nyu40id"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: not a ScanNet label map, missing column(s) {sorted(missing)} "
                            f"(header: {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            raw, nyu = (row.get("id") or "").strip(), (row.get("nyu40id") or "").strip()
            if not nyu:  # a few ScanNet rows carry no NYU40 mapping: ignored class
                continue
            try:
                raw_id, nyu_id = int(raw), int(nyu)
            except ValueError:
                raise DataError(f"{path}:{line}: id '{raw}' / nyu40id '{nyu}' is not an integer") from None
            if not (0 <= raw_id < LUT_SIZE and 0 <= nyu_id < nyu_to_index.size):
                raise DataError(f"{path}:{line}: id {raw_id} or nyu40id {nyu_id} out of range")
            lut[raw_id] = nyu_to_index[nyu_id]
    return lut


def find_label_tsv(scene_dir: str | Path) -> Path | None:
    """The label map tsv in the scene folder or up to two levels above it (ScanNet keeps one copy
    at the dataset root, beside ``scans/``), or None."""
    d = Path(scene_dir).resolve()
    for folder in (d, d.parent, d.parent.parent):
        candidate = folder / LABEL_TSV_NAME
        if candidate.is_file():
            return candidate
    return None
