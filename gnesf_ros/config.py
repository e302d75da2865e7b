"""Typed configuration: the single source of defaults.

``config/default.yaml`` mirrors these dataclasses; ``load_config(path)`` overlays a YAML file
(unknown keys are an error, so typos never pass silently). Field names carry units
(``_m``, ``_deg``, ``_hz``, ``_vox``).
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
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
    input_height: int = 240  # network input (px); probabilities come back at the image's own size
    input_width: int = 320  # network input width (px)
    batch_size: int = 4  # images per forward pass
    threads: int = 2  # CPU threads for inference (torch threads; the oracle segments frames in parallel)
    oracle_miou: float = 65.0  # expected 2D mIoU of the noisy oracle (percent)
    oracle_seed: int = 0  # seed of the oracle's noise (with the frame index)
    oracle_temperature: float = 1.0  # > 1 flattens the oracle's probabilities
    device: str = "cpu"  # torch device of the mask2former backend (cpu | cuda)
    external_label_confidence: float = 0.9  # external label images -> this probability on the label


@dataclass
class ModelConfig:
    weights: str = "models/gnesf_synthetic.pt"  # GNeSF weights (.pt; relative: package data) for modes rgb and rgbd
    geometry: str = "mvs"  # rgb mode geometry: mvs (plane-sweep depth of each keyframe from earlier keyframes, TSDF-fused) | volume (GNeSF coarse-to-fine feature volume, NeuralRecon style; weak weights)
    mvs_weights: str = "models/mvs_depth.pt"  # MVS depth network (.pt; relative: package data) for geometry mvs
    mvs_sources: int = 2  # earlier keyframes matched against each keyframe (1-4)
    mvs_refine_steps: int = 8  # local sweep of +- this many 1 % depth steps around the network's depth (0 = off)
    mvs_min_confidence: float = 0.2  # predicted depth below this confidence is not integrated
    mvs_agreement: float = 0.05  # > 0: a pixel whose 3D point an earlier keyframe's predicted depth covers must agree with it within this share of its depth (else dropped); 0 = off
    mvs_unverified_weight: float = 0.5  # fusion weight factor of pixels no earlier keyframe's depth covers (new surface)
    voting: str = "prob_vis"  # direct | logit | prob | prob_vis | mean (no network: average of the views that see a voxel)
    voxel_size_m: float = 0.04  # finest level
    volume_size_vox: int = 96  # fragment cube edge at the finest level
    trunc_vox: float = 3.0  # TSDF truncation in voxels of each level (NeuralRecon: 3)
    max_depth_m: float = 3.0  # frusta depth used to place the fragment cube
    min_views: int = 2  # a voxel needs this many views to be evaluated
    occ_threshold: float = 0.5  # pruning: keep voxels with occupancy probability above this
    # The surface band of the predicted SDF; 0 = prune by occupancy alone (NeuralRecon).
    fine_keep_tsdf_band: float = 0.0  # > 0: also output finest voxels with predicted |TSDF| (truncation units) below this
    occ_band_vox: tuple = (3.0, 2.0, 1.5)  # occupancy target |sdf| < band (voxels of the level), coarse->fine
    feat_channels: tuple = (32, 24, 16)  # 2D features per level (strides 16, 8, 4), coarse->fine
    backbone: str = "small"  # 2D feature network: small (trained from scratch) | efficientnet_lite0 (ImageNet-pretrained, from PyPI)
    geo_channels: tuple = (32, 24, 16)  # 3D channels per level (16 cm dense, 8 cm dense, 4 cm sparse)
    sparse_convs: int = 2  # residual submanifold convs at the finest level
    max_fine_voxels: int = 400000  # cap on finest-level voxels (most occupied parents win)
    vote_hidden: int = 32  # voting MLP width
    vis_samples: int = 32  # SDF samples per (view, voxel) segment for the visibility test
    vote_band_vox: float = 2.0  # rgbd: the network votes on the depth-map voxels with |sdf| <= this (voxels); other corners of surface-crossing cells get the mean of the seeing views
    vis_near_m: float = 0.05  # visibility walk starts this far in front of the camera
    rgbd_visibility: str = "depth"  # rgbd prob_vis occlusion test: depth (z-test against the frames' depth maps) | sdf (walk the fused SDF)
    render_samples: int = 128  # uniform samples per rendered ray
    render_near_m: float = 0.1  # near bound of rendered rays (m)
    render_far_m: float = 4.0  # far bound of rendered rays (m)
    render_tau_vox: float = 0.5  # sigmoid sharpness of the SDF rendering weights (finest voxels)
    threads: int = 2  # torch CPU threads for inference (0 = leave torch's setting)
    device: str = "cpu"  # torch device of the GNeSF model (cpu | cuda)


@dataclass
class GnesfTrainConfig:
    """`gnesf-train gnesf`: geometry phase (TSDF losses), then frozen geometry + voting (2D losses)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = 1000  # total optimiser steps (--steps overrides)
    geometry_fraction: float = 0.6  # first part of the steps trains geometry only
    lr: float = 1e-3
    train_seed_start: int = 0  # synthetic train scenes: seeds [start, start + count)
    train_seed_count: int = 40
    frames_per_scene: int = 300  # camera path length the windows are drawn from
    views: int = 9  # source views per fragment window
    heldout_views: int = 2  # extra views of the window rendered for the semantic loss
    height: int = 240
    width: int = 320
    rays: int = 512  # rays per held-out view and step
    oracle_miou: float = 65.0  # noisy 2D probabilities (percent mIoU) used as S_i
    occ_pos_weight: float = 1.5  # occupancy BCE weight of positives (NeuralRecon: 1.5)
    occ_balance_max: tuple = (0.0, 0.0, 0.0)  # per level, coarse->fine: > 0 = class-balanced positive weight
    # #neg/#pos capped at this value (coarse levels only prune, so recall matters there); 0 = occ_pos_weight
    tsdf_everywhere: bool = False  # TSDF L1 also over the other known voxels (own mean term); False: occupied only
    # Phase 2 renders the held-out rays and walks visibility on this surface. depth: the TSDF fused
    # from the window's depth maps (the voters learn which views see the true surface; what rgbd mode feeds them).
    semantic_surface: str = "learned"  # learned (the predicted SDF) | depth (the window's depth TSDF)
    save_every: int = 50
    log_every: int = 10  # steps between pruning checks without teacher forcing (crec/cprec in the log)
    seed: int = 0
    threads: int = 2  # torch threads of the optimiser process
    workers: int = 1  # data processes rendering windows ahead (0 = render in the training process)
    window_pool: int = 1  # recently rendered windows kept for re-use (rendering costs ~1-2 s a window)
    window_repeats: int = 1  # training steps drawn (at random from the pool) per newly rendered window


@dataclass
class MapConfig:
    voxel_size_m: float = 0.04  # map voxel edge (metres); must equal the model's finest level
    block_size_vox: int = 8  # voxels per block edge (sparse hashing unit)
    trunc_vox: float = 3.0  # TSDF truncation (voxels)
    max_blocks: int = 30000  # memory cap (~46 KB per block at 20 classes); evicts beyond it
    max_weight: float = 64.0  # SDF weight saturation (keeps the map adaptive)
    fusion: str = "average"  # average | bayesian (Kimera-style baseline)
    bayes_measurement_prob: float = 0.8  # Kimera's semantic_measurement_probability (> 0.5)
    occupancy_min_height_m: float = 0.1  # height band (map z, REP-103 up) for the 2D occupancy grid
    occupancy_max_height_m: float = 1.5  # top of that band; also the top of the top-down class grid
    occupied_sdf_vox: float = 0.6  # a voxel is surface/occupied when sdf <= this (voxels)
    eviction: str = "farthest"  # farthest (from the latest camera) | stale (least recently updated)
    min_ray_m: float = 0.1  # depth integration: nearer depth is invalid (Kimera default)
    max_ray_m: float = 5.0  # depth integration: farther depth is invalid (Kimera default)
    alloc_pixel_stride: int = 4  # depth integration: every n-th pixel (both axes) allocates band blocks


@dataclass
class EvalConfig:
    """Mesh-quality protocol (NeuralRecon): distances between point sets taken from both meshes."""
    threshold_m: float = 0.05  # precision / recall / F-score distance threshold
    sampling: str = "vertices"  # vertices (NeuralRecon, Atlas) | surface (uniform on faces)
    surface_points_per_m2: float = 10000.0  # density of 'surface' sampling (~1 cm spacing)
    downsample_m: float = 0.02  # voxel down-sampling of both point sets (NeuralRecon: 2 cm); 0 = off
    seed: int = 0  # RNG seed of 'surface' sampling


@dataclass
class MapperConfig:
    mode: str = "rgbd"  # rgbd (depth TSDF + GNeSF voting) | rgb (RGB only: geometry from model.geometry + GNeSF voting) | baseline_bayesian | baseline_average
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
    if not where and type(obj).__module__ == __name__:  # a whole config of this module (other modules: their own checks)
        validate_config(obj)
    return obj


# Value rules of the config dataclasses above (the defaults stay there): checked once a YAML file or
# overrides are applied, so an impossible value is a ConfigError naming its key, not a crash (or a
# silently wrong map) later. Every number must be finite; every int >= 0 and every float >= 0
# unless listed in SIGNED; the fields below have tighter bounds: (low, high, low_is_strict[, high_is_strict]).
_POS = (0, None, True)  # > 0
_ONE = (1, None, False)  # >= 1 (ints)
_UNIT = (0.0, 1.0, False)  # [0, 1]
_RULES: dict[str, dict[str, tuple]] = {
    "CameraConfig": {"width": _ONE, "height": _ONE, "max_depth_m": _POS},
    "KeyframeConfig": {"fragment_size": _ONE},
    "SegmenterConfig": {"input_height": _ONE, "input_width": _ONE, "batch_size": _ONE, "threads": _ONE,
                        "oracle_miou": (0.0, 100.0, True), "oracle_temperature": _POS,
                        "external_label_confidence": (0.0, 1.0, True)},
    "ModelConfig": {"voxel_size_m": _POS, "volume_size_vox": _ONE, "trunc_vox": _POS, "max_depth_m": _POS,
                    "min_views": _ONE, "occ_threshold": _UNIT, "occ_band_vox": _POS, "feat_channels": _ONE,
                    "geo_channels": _ONE, "max_fine_voxels": _ONE, "vote_hidden": _ONE, "vis_samples": _ONE,
                    "render_samples": _ONE, "render_far_m": _POS, "render_tau_vox": _POS,
                    "mvs_sources": (1, 4, False, False), "mvs_min_confidence": _UNIT,
                    "mvs_agreement": _UNIT, "mvs_unverified_weight": _UNIT},
    "MapConfig": {"voxel_size_m": _POS, "block_size_vox": _ONE, "trunc_vox": _POS, "max_blocks": _ONE,
                  "max_weight": _POS, "bayes_measurement_prob": (0.5, 1.0, True, True), "max_ray_m": _POS,
                  "alloc_pixel_stride": _ONE},
    "EvalConfig": {"threshold_m": _POS, "surface_points_per_m2": _POS},
    "GnesfTrainConfig": {"steps": _ONE, "geometry_fraction": _UNIT, "lr": _POS, "train_seed_count": _ONE,
                         "frames_per_scene": _ONE, "views": _ONE, "height": _ONE, "width": _ONE, "rays": _ONE,
                         "oracle_miou": (0.0, 100.0, True), "occ_pos_weight": _POS, "save_every": _ONE,
                         "log_every": _ONE, "window_pool": _ONE, "window_repeats": _ONE},
}
SIGNED = {("MapConfig", "occupancy_min_height_m"), ("MapConfig", "occupancy_max_height_m"),
          ("MapConfig", "occupied_sdf_vox")}
LEVEL_TUPLES = {"occ_band_vox", "feat_channels", "geo_channels", "occ_balance_max"}  # one value per level
DEVICE_RE = re.compile(r"(cpu|cuda|mps|xpu)(:\d+)?")
BACKBONES = ("small", "efficientnet_lite0")  # ModelConfig.backbone values
GEOMETRIES = ("volume", "mvs")  # ModelConfig.geometry values


def _check_number(path: str, value: Any, integer: bool, rule: tuple | None, signed: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"config key '{path}': expected {'an integer' if integer else 'a number'}, got {value!r}")
    lo, hi, strict, strict_hi = (*(rule or ((None, None, False) if signed else (0, None, False))), False)[:4]
    bad = not math.isfinite(value)
    bad = bad or (lo is not None and (value <= lo if strict else value < lo))
    bad = bad or (hi is not None and (value >= hi if strict_hi else value > hi))
    if bad:
        if lo is not None and hi is not None:
            want = f"in {'(' if strict else '['}{lo}, {hi}{')' if strict_hi else ']'}"
        elif lo is not None:
            want = f"{'>' if strict else '>='} {lo}"
        else:
            want = "finite"
        raise ConfigError(f"config key '{path}': must be {want}, got {value!r}")


def validate_config(cfg: Any, where: str = "") -> Any:
    """Check every value of a config dataclass (and those nested in it) against the rules above;
    the first impossible one is a ConfigError naming its key. Returns ``cfg``."""
    cls = type(cfg).__name__
    hints = get_type_hints(type(cfg))
    rules = _RULES.get(cls, {})
    for f in dataclasses.fields(cfg):
        path = f"{where}.{f.name}" if where else f.name
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate_config(value, path)
            continue
        typ, rule, signed = hints[f.name], rules.get(f.name), (cls, f.name) in SIGNED
        if typ in (int, float):
            _check_number(path, value, typ is int, rule, signed)
        elif typ is tuple or f.name in LEVEL_TUPLES:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != 3:
                raise ConfigError(f"config key '{path}': expected a list of 3 numbers (coarse->fine), got {value!r}")
            integer = all(isinstance(v, int) for v in getattr(type(cfg)(), f.name))
            for i, v in enumerate(value):
                _check_number(f"{path}[{i}]", v, integer, rule, signed)
        elif cls == "ModelConfig" and f.name == "geometry" and value not in GEOMETRIES:
            raise ConfigError(f"config key '{path}': expected one of {', '.join(GEOMETRIES)}, got {value!r}")
        elif cls == "ModelConfig" and f.name == "backbone" and value not in BACKBONES:
            raise ConfigError(f"config key '{path}': expected one of {', '.join(BACKBONES)}, got {value!r}")
        elif f.name == "device" and not DEVICE_RE.fullmatch(str(value)):
            raise ConfigError(f"config key '{path}': expected a torch device such as cpu or cuda:0, got {value!r}")
    if cls == "ModelConfig" and cfg.render_far_m <= cfg.render_near_m:
        raise ConfigError(f"config key '{where}.render_far_m': must be > render_near_m ({cfg.render_near_m}), "
                          f"got {cfg.render_far_m}")
    if cls == "MapConfig":
        if cfg.max_ray_m <= cfg.min_ray_m:
            raise ConfigError(f"config key '{where}.max_ray_m': must be > min_ray_m ({cfg.min_ray_m}), got {cfg.max_ray_m}")
        if cfg.occupancy_max_height_m <= cfg.occupancy_min_height_m:
            raise ConfigError(f"config key '{where}.occupancy_max_height_m': must be > occupancy_min_height_m "
                              f"({cfg.occupancy_min_height_m}), got {cfg.occupancy_max_height_m}")
    if cls == "KeyframeConfig" and not cfg.fragment_overlap < cfg.fragment_size:
        raise ConfigError(f"config key '{where}.fragment_overlap': must be < fragment_size ({cfg.fragment_size}), "
                          f"got {cfg.fragment_overlap}")
    return cfg


def read_yaml_file(path: str | Path, what: str, error: type[GnesfError] | None = None) -> Any:
    """Parsed YAML of a user-given file ({} when empty); a missing file or bad YAML raises ``error``
    (default ConfigError) with a message naming ``what`` the file is for."""
    error = error or ConfigError
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise error(f"{what} {p} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise error(f"{what} {p} is not valid YAML: {' '.join(str(e).split())}") from None


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> MapperConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides`` (nested dict)."""
    cfg = MapperConfig()
    if path is not None:
        _apply(cfg, read_yaml_file(path, "config file"), "")
    if overrides:
        _apply(cfg, overrides, "")
    return cfg


@lru_cache(maxsize=None)
def field_help(cls: type) -> dict[str, str]:
    """Descriptions of a config dataclass's fields, read from their trailing ``# comments``.

    The comment beside a default is the one place a setting is explained; ROS parameter
    descriptions come from here (a test requires one for every field).
    """
    pattern = re.compile(r"^\s+(\w+):\s*[^=]+=.*?#\s*(.+)$")
    return {m.group(1): m.group(2).strip()
            for m in map(pattern.match, inspect.getsource(cls).splitlines()) if m}


def default_yaml(cfg: Any | None = None, indent: int = 0) -> str:
    """config/default.yaml: the MapperConfig defaults with each field's comment (regenerate with
    ``python -m gnesf_ros.config > config/default.yaml``; a test checks the file is current)."""
    if cfg is None:
        head = ("# Defaults of gnesf_ros, generated from gnesf_ros/config.py (python -m gnesf_ros.config).\n"
                "# Copy it and change what you need: gnesf-map --config FILE, or the node's mapper_config.\n"
                "# Units are in the names (_m metres, _deg degrees, _vox voxels, _hz hertz).\n")
        return head + default_yaml(MapperConfig(), 0)
    lines, helps, pad = [], field_help(type(cfg)), " " * indent
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:")
            lines.append(default_yaml(value, indent + 2).rstrip("\n"))
            continue
        if isinstance(value, tuple):
            value = list(value)
        text = yaml.safe_dump({f.name: value}, default_flow_style=True, width=1000).strip()[1:-1]
        comment = f"  # {helps[f.name]}" if f.name in helps else ""
        lines.append(f"{pad}{text}{comment}")
    return "\n".join(lines) + "\n"


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


if __name__ == "__main__":
    print(default_yaml(), end="")
