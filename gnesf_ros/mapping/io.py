"""Map files: a lossless npz (format version, voxel size, class table, every block's arrays)
and the labelled PLY mesh (gnesf_ros.data.ply)."""
from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gnesf_ros.classes import ClassTable, default_class_table
from gnesf_ros.config import MapConfig
from gnesf_ros.errors import DataError, GnesfError
from gnesf_ros.mapping.blocks import unpack_block_keys

if TYPE_CHECKING:
    from gnesf_ros.mapping.voxel_map import SemanticVoxelMap

FORMAT = "gnesf_ros.semantic_voxel_map"
FORMAT_VERSION = 1


def save_map(vmap: "SemanticVoxelMap", path: str | Path) -> Path:
    """Write ``vmap`` to ``path`` (written as given, .npz recommended); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    st = vmap.store
    slots = st.active_slots()
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "config": dataclasses.asdict(vmap.cfg),
        "counters": vmap.counters, "tick": vmap.tick,
        "camera_position": None if vmap.camera_position is None else vmap.camera_position.tolist(),
    }
    with open(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)),
                 class_names=np.array(vmap.class_table.names),
                 class_nyu40=np.array(vmap.class_table.nyu40_ids, np.int32),
                 keys=st.slot_key[slots], sdf=st.sdf[slots], weight=st.weight[slots],
                 classes=st.classes[slots], sem_weight=st.sem_weight[slots], stamp=st.stamp[slots])
    return path


def load_map(path: str | Path, class_table: ClassTable | None = None) -> "SemanticVoxelMap":
    """Read a map file. Raises DataError for a missing/corrupt file and GnesfError for another
    format version or a class table different from ``class_table`` (default: the package's)."""
    from gnesf_ros.mapping.voxel_map import SemanticVoxelMap

    path = Path(path)
    if not path.is_file():
        raise DataError(f"map file not found: {path}")
    table = class_table or default_class_table()
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not a gnesf_ros map file ({e})") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a gnesf_ros map file")
    if meta.get("version") != FORMAT_VERSION:
        raise GnesfError(f"{path}: map format version {meta.get('version')} is not supported "
                         f"(this build reads version {FORMAT_VERSION}); rebuild the map")
    names = tuple(str(n) for n in data["class_names"])
    if names != table.names or tuple(int(i) for i in data["class_nyu40"]) != table.nyu40_ids:
        raise GnesfError(f"{path}: map class table ({len(names)} classes: {', '.join(names[:4])}, ...) "
                         f"differs from the configured one ({table.num_classes} classes: "
                         f"{', '.join(table.names[:4])}, ...)")
    known = {f.name for f in dataclasses.fields(MapConfig)}
    cfg = MapConfig(**{k: v for k, v in meta["config"].items() if k in known})
    vmap = SemanticVoxelMap(cfg, table)
    keys = data["keys"].astype(np.int64)
    if data["classes"].shape[1:] != (vmap.store.V, table.num_classes):
        raise DataError(f"{path}: block arrays have shape {data['classes'].shape}, expected "
                        f"(N, {vmap.store.V}, {table.num_classes})")
    st = vmap.store
    slots = st.allocate(keys)
    st.sdf[slots], st.weight[slots] = data["sdf"], data["weight"]
    st.classes[slots], st.sem_weight[slots], st.stamp[slots] = data["classes"], data["sem_weight"], data["stamp"]
    vmap.counters.update(meta["counters"])
    vmap.tick = int(meta["tick"])
    if meta["camera_position"] is not None:
        vmap.camera_position = np.array(meta["camera_position"], np.float64)
    vmap.mark_changed(unpack_block_keys(keys))
    return vmap


def save_mesh_ply(vmap: "SemanticVoxelMap", path: str | Path) -> Path:
    """Write the class-labelled mesh as a ScanNet-style PLY (per-vertex NYU40 ``label``)."""
    from gnesf_ros.data.ply import write_labeled_ply

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_labeled_ply(path, vmap.extract_mesh())
    return path
