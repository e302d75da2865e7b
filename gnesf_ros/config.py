"""Typed configuration: the single source of defaults.

``config/default.yaml`` mirrors these dataclasses; ``load_config(path)`` overlays a YAML file
(unknown keys are an error, so typos never pass silently). Field names carry units
(``_m``, ``_deg``, ``_hz``, ``_vox``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from gnesf_ros.errors import GnesfError


class ConfigError(GnesfError):
    """A configuration file or value a person must fix."""


@dataclass
class CameraConfig:
    width: int = 320  # processing width (px); inputs are resized to this
    height: int = 240  # processing height (px)
    max_depth_m: float = 4.0  # depth beyond this is treated as invalid


@dataclass
class KeyframeConfig:
    min_rotation_deg: float = 15.0  # new keyframe when the view turned more than this
    min_translation_m: float = 0.1  # ... or moved more than this
    fragment_size: int = 9  # keyframes per fragment window
    fragment_overlap: int = 0  # keyframes shared with the previous window


@dataclass
class SegmenterConfig:
    backend: str = "mask2former"  # mask2former | oracle | external
    checkpoint: str = "models/segmenter"  # Mask2Former checkpoint directory (relative: package data)
    remap: str = ""  # YAML label remap (checkpoint labels -> 20 classes); "" = infer from id2label
    input_height: int = 240
    input_width: int = 320
    batch_size: int = 4
    threads: int = 2
    oracle_miou: float = 65.0  # expected 2D mIoU of the noisy oracle (percent)
    oracle_seed: int = 0


@dataclass
class ModelConfig:
    weights: str = "models/gnesf_synthetic.pt"
    voting: str = "prob_vis"  # direct | logit | prob | prob_vis
    voxel_size_m: float = 0.04  # finest level
    volume_size_vox: int = 96  # fragment cube edge at the finest level
    trunc_vox: float = 3.0  # TSDF truncation in voxels of the finest level


@dataclass
class MapConfig:
    voxel_size_m: float = 0.04
    block_size_vox: int = 8
    trunc_vox: float = 3.0
    max_blocks: int = 200000  # memory cap; evicts far/stale blocks beyond it
    max_weight: float = 64.0  # SDF weight saturation (keeps the map adaptive)
    fusion: str = "average"  # average | bayesian (Kimera-style baseline)
    bayes_measurement_prob: float = 0.8
    occupancy_min_height_m: float = 0.1  # height band (map z) for the 2D occupancy grid
    occupancy_max_height_m: float = 1.5


@dataclass
class MapperConfig:
    mode: str = "rgb"  # rgb (learned geometry) | rgbd (depth TSDF geometry + GNeSF semantics)
    device: str = "cpu"
    threads: int = 2
    camera: CameraConfig = field(default_factory=CameraConfig)
    keyframe: KeyframeConfig = field(default_factory=KeyframeConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    map: MapConfig = field(default_factory=MapConfig)


def _apply(obj: Any, data: dict, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown config key '{path}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, path)
            continue
        typ = hints[key]
        try:
            if typ is float and isinstance(value, int):
                value = float(value)
            elif typ in (int, float, str, bool) and not isinstance(value, typ):
                raise TypeError
        except TypeError:
            raise ConfigError(f"config key '{path}': expected {typ.__name__}, got {value!r}") from None
        setattr(obj, key, value)
    return obj


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> MapperConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides`` (nested dict)."""
    cfg = MapperConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        _apply(cfg, data, "")
    if overrides:
        _apply(cfg, overrides, "")
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
