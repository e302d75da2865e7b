"""Map a checkpoint's own labels (its ``id2label``) onto the 20-class table.

A remap YAML (see ``config/remap_ade20k150.yaml``) has

    labels: [name of id 0, name of id 1, ...]   # optional; must have num_labels entries
    map: {checkpoint label: 20-class name | ignore}

Labels that are not mapped are *ignored*: their probability mass is dropped and the rest is
renormalised. Labels missing from ``map`` are listed in one warning at load time; ``ignore`` says
the drop is intended. Without an explicit file the remap is inferred from ``id2label``:
a checkpoint whose labels are the 20 class names (any order) maps by name; one whose labels equal
a shipped list (ADE20K-150, COCO-panoptic-133) uses that file; otherwise labels map by exact name.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gnesf_ros.classes import ClassTable
from gnesf_ros.config import read_yaml_file
from gnesf_ros.errors import ModelError
from gnesf_ros.paths import config_dir

log = logging.getLogger(__name__)

IGNORE_NAME = "ignore"
_GENERIC_LABEL = re.compile(r"^label \d+$")  # transformers default names (LABEL_0), normalised


def normalize_label(name: str) -> str:
    """Compare label names case-, space- and underscore-insensitively ('Bed ' == 'bed')."""
    return " ".join(str(name).replace("_", " ").lower().split())


@dataclass(frozen=True)
class LabelRemap:
    """Checkpoint label k -> class index ``target[k]`` (-1 = ignored)."""

    source_labels: tuple[str, ...]
    target: np.ndarray  # K int64, class index or -1
    unmapped: tuple[str, ...]  # labels the remap did not mention (ignored, warned about)
    origin: str  # where the mapping came from (file path, 'identity', 'by name')

    @property
    def num_labels(self) -> int:
        return len(self.source_labels)

    def matrix(self, num_classes: int) -> np.ndarray:
        """K x C float32 0/1 matrix: class scores = label scores @ matrix."""
        m = np.zeros((self.num_labels, num_classes), np.float32)
        keep = self.target >= 0
        m[np.nonzero(keep)[0], self.target[keep]] = 1.0
        return m


def checkpoint_labels(id2label: dict) -> list[str]:
    """id2label (int or str keys) -> names in id order; ids must be 0..K-1."""
    try:
        table = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ModelError(f"checkpoint id2label has non-integer ids: {list(id2label)[:5]}") from None
    if sorted(table) != list(range(len(table))) or not table:
        raise ModelError(f"checkpoint id2label ids must be 0..K-1, got {sorted(table)[:10]}")
    return [table[i] for i in range(len(table))]


def read_remap_file(path: str | Path) -> dict:
    p = Path(path)
    spec = read_yaml_file(p, "label remap file", ModelError)
    if not isinstance(spec, dict) or not isinstance(spec.get("map"), dict):
        raise ModelError(f"label remap file {p} needs a 'map:' mapping (checkpoint label -> class name)")
    labels = spec.get("labels")
    if labels is not None and not isinstance(labels, list):
        raise ModelError(f"label remap file {p}: 'labels' must be a list of names in id order")
    return spec


def shipped_remaps() -> list[Path]:
    """The remap files shipped in config/ (ADE20K-150, COCO-panoptic-133)."""
    return sorted(config_dir().glob("remap_*.yaml"))


def remap_from_spec(spec: dict, checkpoint_names: list[str], table: ClassTable, origin: str) -> LabelRemap:
    """Apply a parsed remap file to a checkpoint's label names; checks counts and names."""
    labels = spec.get("labels")
    if labels is None:
        labels = checkpoint_names
    elif len(labels) != len(checkpoint_names):
        raise ModelError(f"label remap {origin} lists {len(labels)} labels but the checkpoint predicts "
                         f"{len(checkpoint_names)} (config.json id2label); use a remap written for this checkpoint")
    else:
        differ = [(i, a, b) for i, (a, b) in enumerate(zip(checkpoint_names, labels))
                  if normalize_label(a) != normalize_label(b) and not _GENERIC_LABEL.match(normalize_label(a))]
        if differ:
            shown = ", ".join(f"id {i}: checkpoint '{a}' vs remap '{b}'" for i, a, b in differ[:5])
            log.warning("label remap %s names differ from the checkpoint's id2label in %d place(s) (%s); "
                        "mapping by id as the remap lists them", origin, len(differ), shown)
    index = {normalize_label(n): i for i, n in enumerate(labels)}
    class_index = {normalize_label(n): i for i, n in enumerate(table.names)}
    target = np.full(len(labels), -1, np.int64)
    mentioned = set()
    bad_keys, bad_values = [], []
    for key, value in spec["map"].items():
        k = index.get(normalize_label(key))
        if k is None:
            bad_keys.append(str(key))
            continue
        mentioned.add(k)
        v = normalize_label(value)
        if v == IGNORE_NAME:
            continue
        if v not in class_index:
            bad_values.append(f"{key} -> {value}")
            continue
        target[k] = class_index[v]
    if bad_keys:
        raise ModelError(f"label remap {origin} maps labels the checkpoint does not have: {', '.join(bad_keys)}")
    if bad_values:
        raise ModelError(f"label remap {origin} maps to unknown classes ({'; '.join(bad_values)}); "
                         f"valid: {', '.join(table.names)} or '{IGNORE_NAME}'")
    unmapped = tuple(labels[k] for k in range(len(labels)) if k not in mentioned)
    return LabelRemap(tuple(str(n) for n in labels), target, unmapped, origin)


def infer_remap(checkpoint_names: list[str], table: ClassTable) -> LabelRemap:
    """Identity (by name) for 20-class checkpoints, a shipped file whose label list matches, else by name."""
    norm = [normalize_label(n) for n in checkpoint_names]
    class_names = {normalize_label(n) for n in table.names}
    if len(norm) == table.num_classes and set(norm) == class_names:
        spec = {"map": {n: n for n in checkpoint_names}}
        return remap_from_spec(spec, checkpoint_names, table, "identity (20-class checkpoint)")
    for path in shipped_remaps():
        spec = read_remap_file(path)
        labels = spec.get("labels")
        if labels is not None and [normalize_label(n) for n in labels] == norm:
            return remap_from_spec(spec, checkpoint_names, table, str(path))
    spec = {"map": {n: n for n in checkpoint_names if normalize_label(n) in class_names}}
    if not spec["map"]:
        raise ModelError(
            f"cannot map the checkpoint's {len(norm)} labels ({', '.join(checkpoint_names[:8])}, ...) to the "
            f"{table.num_classes} classes: none has a class name; write a remap YAML like "
            "config/remap_ade20k150.yaml and set segmenter.remap")
    return remap_from_spec(spec, checkpoint_names, table, "by name")


def build_remap(id2label: dict, table: ClassTable, remap_path: str | Path | None = None) -> LabelRemap:
    """The remap for a checkpoint: from ``remap_path`` if given, else inferred; warns about unmapped labels."""
    names = checkpoint_labels(id2label)
    if remap_path:
        remap = remap_from_spec(read_remap_file(remap_path), names, table, str(remap_path))
    else:
        remap = infer_remap(names, table)
    if remap.unmapped:
        log.warning("label remap %s: %d of %d checkpoint labels are not among the %d classes and are ignored: %s",
                    remap.origin, len(remap.unmapped), remap.num_labels, table.num_classes,
                    ", ".join(remap.unmapped))
    return remap
