"""Map files: a lossless npz (format version, voxel size, class table, every block's arrays)
and the labelled PLY mesh (gnesf_ros.data.ply)."""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gnesf_ros.atomic import atomic_open, atomic_path
from gnesf_ros.classes import ClassTable, default_class_table
from gnesf_ros.config import MapConfig
from gnesf_ros.errors import DataError, GnesfError
from gnesf_ros.mapping.blocks import unpack_block_keys

if TYPE_CHECKING:
    from gnesf_ros.mapping.voxel_map import SemanticVoxelMap

FORMAT = "gnesf_ros.semantic_voxel_map"
FORMAT_VERSION = 1


def save_map(vmap: "SemanticVoxelMap", path: str | Path) -> Path:
    """Write ``vmap`` to ``path`` (written as given, .npz recommended); returns the path.

    Atomic (gnesf_ros.atomic): written beside the target and renamed onto it, so that a crash or
    SIGKILL during the save leaves the previous map, never a 0-byte or truncated file."""
    path = Path(path)
    st = vmap.store
    slots = st.active_slots()
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "config": dataclasses.asdict(vmap.cfg),
        "counters": vmap.counters, "tick": vmap.tick,
        "camera_position": None if vmap.camera_position is None else vmap.camera_position.tolist(),
    }
    with atomic_open(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)),
                 class_names=np.array(vmap.class_table.names),
                 class_nyu40=np.array(vmap.class_table.nyu40_ids, np.int32),
                 keys=st.slot_key[slots], sdf=st.sdf[slots], weight=st.weight[slots],
                 classes=st.classes[slots], sem_weight=st.sem_weight[slots], stamp=st.stamp[slots])
    return path


_ARRAYS = ("meta", "class_names", "class_nyu40", "keys", "sdf", "weight", "classes", "sem_weight", "stamp")


def _read_npz(path: Path) -> dict:
    """Every array of the map file; DataError naming the file and the reason otherwise."""
    size = path.stat().st_size
    if not os.access(path, os.R_OK):
        raise DataError(f"map file {path}: not readable (permission denied)")
    if size == 0:
        raise DataError(f"{path} is not a gnesf_ros map file (empty file, 0 bytes)")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a gnesf_ros map file (not an npz/zip archive, or truncated: {size} bytes)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _ARRAYS if k not in z.files]
            if missing:
                raise DataError(f"{path} is not a complete gnesf_ros map file (missing array"
                                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)})")
            return {k: z[k] for k in _ARRAYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        raise DataError(f"{path} is a damaged gnesf_ros map file ({type(e).__name__}: {e})") from None


def load_map(path: str | Path, class_table: ClassTable | None = None) -> "SemanticVoxelMap":
    """Read a map file. Raises DataError for a missing/corrupt file and GnesfError for another
    format version or a class table different from ``class_table`` (default: the package's)."""
    from gnesf_ros.mapping.voxel_map import SemanticVoxelMap

    path = Path(path)
    if not path.is_file():
        raise DataError(f"map file not found: {path}" if not path.exists() else f"map file {path}: not a file")
    table = class_table or default_class_table()
    data = _read_npz(path)
    try:
        meta = json.loads(str(data["meta"]))
    except (ValueError, TypeError) as e:
        raise DataError(f"{path} is not a gnesf_ros map file (unreadable metadata: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a gnesf_ros map file (format is not {FORMAT})")
    if meta.get("version") != FORMAT_VERSION:
        raise GnesfError(f"{path}: map format version {meta.get('version')} is not supported "
                         f"(this build reads version {FORMAT_VERSION}); rebuild the map")
    missing = [k for k in ("config", "counters", "tick", "camera_position") if k not in meta]
    if missing:
        raise DataError(f"{path}: map metadata lacks {', '.join(missing)}")
    names = tuple(str(n) for n in np.atleast_1d(data["class_names"]))
    if names != table.names or tuple(int(i) for i in np.atleast_1d(data["class_nyu40"])) != table.nyu40_ids:
        raise DataError(f"{path}: map class table ({len(names)} classes: {', '.join(names[:4])}, ...) "
                        f"differs from the configured one ({table.num_classes} classes: "
                        f"{', '.join(table.names[:4])}, ...)")
    known = {f.name for f in dataclasses.fields(MapConfig)}
    try:
        cfg = MapConfig(**{k: v for k, v in meta["config"].items() if k in known})
        vmap = SemanticVoxelMap(cfg, table)
    except (AttributeError, TypeError, ValueError, GnesfError) as e:
        raise DataError(f"{path}: map configuration is invalid ({e})") from None
    st = vmap.store
    n = len(data["keys"])
    shapes = {"keys": (n,), "sdf": (n, st.V), "weight": (n, st.V), "classes": (n, st.V, table.num_classes),
              "sem_weight": (n, st.V), "stamp": (n,)}
    for name, want in shapes.items():
        got = data[name].shape
        if got != want or data[name].dtype.kind not in "iuf":
            raise DataError(f"{path}: block array '{name}' has shape {got} ({data[name].dtype}), expected "
                            f"{tuple('N' if i == 0 else d for i, d in enumerate(want))} "
                            f"(voxels per block {st.V}, {table.num_classes} classes)")
    keys = data["keys"].astype(np.int64)
    if len(np.unique(keys)) != n:
        raise DataError(f"{path}: duplicate block keys")
    try:
        slots = st.allocate(keys)
        st.sdf[slots], st.weight[slots] = data["sdf"], data["weight"]
        st.classes[slots], st.sem_weight[slots], st.stamp[slots] = data["classes"], data["sem_weight"], data["stamp"]
        vmap.counters.update(meta["counters"])
        vmap.tick = int(meta["tick"])
        if meta["camera_position"] is not None:
            vmap.camera_position = np.array(meta["camera_position"], np.float64).reshape(3)
    except (TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: map contents are invalid ({e})") from None
    vmap.mark_changed(unpack_block_keys(keys))
    return vmap


def save_mesh_ply(vmap: "SemanticVoxelMap", path: str | Path) -> Path:
    """Write the class-labelled mesh as a ScanNet-style PLY (per-vertex NYU40 ``label``), atomically."""
    from gnesf_ros.data.ply import write_labeled_ply

    path = Path(path)
    mesh = vmap.extract_mesh()
    with atomic_path(path) as tmp:
        write_labeled_ply(tmp, mesh)
    return path
