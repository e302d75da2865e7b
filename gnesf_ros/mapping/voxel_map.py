"""The global semantic voxel map: sparse blocks of SDF + class distribution, fused over time.

Frames: everything is in the map frame (metres, REP-103: z up); voxel (i, j, k) has its centre
at ((i, j, k) + 0.5) * voxel_size. Cameras are given as T_world_cam (camera-to-map, optical
frame x right / y down / z forward) with pinhole K in pixels.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from gnesf_ros.classes import IGNORE, ClassTable, default_class_table
from gnesf_ros.config import ConfigError, MapConfig
from gnesf_ros.errors import GnesfError
from gnesf_ros.geometry.camera import is_valid_pose
from gnesf_ros.mapping import fusion as F
from gnesf_ros.mapping import grids, tsdf
from gnesf_ros.mapping.blocks import (VOXEL_COORD_LIMIT, BlockStore, pack_block_keys, unique_blocks,
                                      unpack_block_keys)
from gnesf_ros.mapping.mesh import IncrementalMesh
from gnesf_ros.mapping.raycast import MeshRaycaster
from gnesf_ros.types import Frame, FragmentResult

log = logging.getLogger(__name__)

UNKNOWN_COLOR = (128, 128, 128)
EVICTIONS = ("farthest", "stale")
_DENSE_LOOKUP_MAX_CELLS = 1 << 24  # neighbour look-ups: dense int32 index grid up to this many cells (64 MB)
_DEPTH_CHUNK_BLOCKS = 512  # depth integration works on this many blocks (262k voxels) at a time
COUNTERS = ("fragments_integrated", "empty_results", "voxels_fused", "nan_voxels_skipped",
            "out_of_range_voxels_skipped", "frames_integrated", "frames_skipped_no_depth",
            "frames_skipped_bad_pose", "blocks_evicted", "evictions")


class SemanticVoxelMap:
    """Sparse voxel-block map (blocks of block_size^3 voxels) with SDF, weight, class vector and
    semantic weight per voxel. ``cfg.fusion`` picks the label fusion: ``average`` (probabilities)
    or ``bayesian`` (Kimera log-probabilities)."""

    def __init__(self, cfg: MapConfig | None = None, class_table: ClassTable | None = None):
        self.cfg = cfg or MapConfig()
        self.class_table = class_table or default_class_table()
        F.check_fusion(self.cfg.fusion, self.cfg.bayes_measurement_prob)
        if self.cfg.eviction not in EVICTIONS:
            raise ConfigError(f"map.eviction must be one of {', '.join(EVICTIONS)}, got '{self.cfg.eviction}'")
        if self.cfg.max_blocks < 1 or self.cfg.block_size_vox < 2 or self.cfg.voxel_size_m <= 0:
            raise ConfigError("map.max_blocks must be >= 1, map.block_size_vox >= 2 and map.voxel_size_m > 0")
        self.voxel_size = float(self.cfg.voxel_size_m)
        self.trunc_m = float(self.cfg.trunc_vox) * self.voxel_size
        C = self.class_table.num_classes
        # Capacity beyond the cap only for the blocks one integration allocates before eviction.
        self.store = BlockStore(self.cfg.block_size_vox, C, F.class_init_value(self.cfg.fusion, C),
                                soft_capacity=self.cfg.max_blocks + 1024)
        self.counters = {k: 0 for k in COUNTERS}
        self.tick = 0
        self.camera_position: np.ndarray | None = None  # latest camera centre (metres)
        self._dirty: list[np.ndarray] = []  # block coords changed since the last meshing
        self._mesh = IncrementalMesh(C)
        self._raycaster = MeshRaycaster()

    # -- size ------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.store)

    @property
    def num_classes(self) -> int:
        return self.class_table.num_classes

    def memory_bytes(self) -> int:
        """Bytes held by voxel storage (allocated capacity) and the mesh cache."""
        m = self._mesh.mesh
        return self.store.memory_bytes() + sum(a.nbytes for a in (m.tri_keys, m.tri_block, m.vert_keys,
                                                                   m.vertices, m.probs))

    def clear(self) -> None:
        self.__init__(self.cfg, self.class_table)

    # -- integration -----------------------------------------------------------------------
    def integrate(self, result: FragmentResult, camera_position: np.ndarray | None = None) -> int:
        """Fuse a fragment's voxels; returns the number of voxels fused.

        SDF: weighted running average (weight saturates at cfg.max_weight) where weight > 0.
        Classes: where sem_weight > 0 (sem_weight defaults to weight); voxels with sem_weight 0
        (e.g. visibility-masked) keep their semantics; 'bayesian' fuses each row's argmax label
        with Kimera's rule (uniform rows are unknown). Rows with NaN/inf or negative weights
        are skipped and counted. camera_position (3, metres) feeds 'farthest' eviction."""
        n = len(result)
        C = self.num_classes
        if n == 0:
            self.counters["empty_results"] += 1
            return 0
        if abs(result.voxel_size - self.voxel_size) > 1e-9:
            raise GnesfError(f"fragment voxel size {result.voxel_size} m does not match the map's "
                             f"{self.voxel_size} m")
        probs = np.asarray(result.class_probs, np.float32)
        if probs.shape != (n, C) or result.coords.shape != (n, 3):
            raise GnesfError(f"fragment result shapes do not match: coords {result.coords.shape}, "
                             f"class_probs {probs.shape} (expected {n}x{C})")
        coords = np.asarray(result.coords, np.int64)
        sdf = np.asarray(result.sdf, np.float32).reshape(n)
        w = np.asarray(result.weight, np.float32).reshape(n)
        sw = w if result.sem_weight is None else np.asarray(result.sem_weight, np.float32).reshape(n)
        finite = (np.isfinite(sdf) & np.isfinite(w) & np.isfinite(sw) & np.isfinite(probs).all(1)
                  & (w >= 0) & (sw >= 0))
        in_range = (np.abs(coords) < VOXEL_COORD_LIMIT - 1).all(1)
        self.counters["nan_voxels_skipped"] += int((~finite).sum())
        self.counters["out_of_range_voxels_skipped"] += int((finite & ~in_range).sum())
        keep = finite & in_range & ((w > 0) | (sw > 0))
        if camera_position is not None:
            self.camera_position = np.asarray(camera_position, np.float64)
        self.counters["fragments_integrated"] += 1
        if not keep.any():
            return 0
        coords, sdf, w, sw, probs = coords[keep], sdf[keep], w[keep], sw[keep], probs[keep]
        flat = self._voxel_flat_index(coords, allocate=True)
        uniq, inv = np.unique(flat, return_inverse=True)
        U = uniq.size
        sdf = np.clip(sdf, -self.trunc_m, self.trunc_m)
        w_sum = np.bincount(inv, w, U)
        wsdf_sum = np.bincount(inv, w * sdf, U)
        if self.cfg.fusion == "average":
            sem_sum = np.stack([np.bincount(inv, sw * probs[:, c], U) for c in range(C)], 1)
            sem = ("average", sem_sum, np.bincount(inv, sw, U))
        else:
            lab = np.where(sw > 0, F.hard_labels(probs), IGNORE)
            sem = ("counts", F.label_counts(inv, lab, U, C), None)
        self._apply(uniq, w_sum, wsdf_sum, sem)
        self._enforce_cap()
        return U

    def integrate_depth(self, frame: Frame, probs: np.ndarray | None = None,
                        weight: np.ndarray | None = None) -> int:
        """Projective TSDF integration of ``frame.depth`` (HxW metres, 0 invalid) plus label
        fusion of ``probs`` (HxWxC at the depth size, or None for geometry only). ``weight``
        (HxW, >= 0; None = 1 everywhere) scales each pixel's SDF observation, e.g. the confidence
        of a predicted depth map; pixels of weight 0 are skipped. Returns the number of voxels
        updated; frames without valid depth or with a bad pose are counted and skipped."""
        depth = frame.depth
        if depth is None:
            self.counters["frames_skipped_no_depth"] += 1
            return 0
        T = np.asarray(frame.T_world_cam, np.float64)
        lim = (VOXEL_COORD_LIMIT - 2 * self.cfg.block_size_vox) * self.voxel_size - self.cfg.max_ray_m
        if not is_valid_pose(T) or np.abs(T[:3, 3]).max() > lim:
            self.counters["frames_skipped_bad_pose"] += 1
            return 0
        depth = np.asarray(depth, np.float32)
        valid = tsdf.valid_depth_mask(depth, self.cfg.min_ray_m, self.cfg.max_ray_m)
        if weight is not None:
            weight = np.asarray(weight, np.float32)
            if weight.shape != depth.shape:
                raise GnesfError(f"depth weights {weight.shape} do not match the depth image {depth.shape}")
            valid &= weight > 0
        if not valid.any():
            self.counters["frames_skipped_no_depth"] += 1
            return 0
        K = np.asarray(frame.K, np.float64)
        C = self.num_classes
        if probs is not None and probs.shape != depth.shape + (C,):
            raise GnesfError(f"probabilities {probs.shape} do not match the depth image "
                             f"{depth.shape} x {C} classes")
        self.camera_position = T[:3, 3].copy()
        B = self.cfg.block_size_vox
        blocks = tsdf.band_block_coords(depth, valid, K, T, self.trunc_m, self.voxel_size, B,
                                        max(1, self.cfg.alloc_pixel_stride))
        slots = self.store.allocate(pack_block_keys(blocks))
        P = sem_image = None
        if probs is not None:  # per-pixel observation, looked up by every voxel's pixel below
            P = probs.reshape(-1, C)
            ok = np.isfinite(P).all(1) & (P.sum(1) > 0)
            if self.cfg.fusion == "average":
                P, sem_image = np.where(ok[:, None], P, 0.0).astype(np.float32), ok.astype(np.float32)
            else:
                sem_image = np.where(ok, F.hard_labels(P), IGNORE)
        fused = 0
        for s in range(0, len(blocks), _DEPTH_CHUNK_BLOCKS):  # chunks bound the temporaries' memory
            bc, sl = blocks[s: s + _DEPTH_CHUNK_BLOCKS], slots[s: s + _DEPTH_CHUNK_BLOCKS]
            rel = tsdf.block_voxel_centres(bc, B, self.voxel_size, T[:3, 3])
            hit, pix, sdf = tsdf.project_voxels(rel, depth, K, T, valid)
            upd = hit & (sdf >= -self.trunc_m)
            flat = (sl[:, None] * self.store.V + np.arange(self.store.V)[None]).reshape(-1)[upd]
            pix = pix[upd]
            sem = None
            if sem_image is not None:
                sem = (("average", P[pix], sem_image[pix]) if self.cfg.fusion == "average"
                       else ("labels", sem_image[pix], None))
            # Voxels are unique within one frame: no aggregation needed.
            w = np.ones(flat.size, np.float32) if weight is None else weight.reshape(-1)[pix]
            self._apply(flat, w, w * np.minimum(sdf[upd], np.float32(self.trunc_m)), sem)
            fused += flat.size
        self.counters["frames_integrated"] += 1
        self._enforce_cap()
        return int(fused)

    def voxels_near_surface(self, bounds: np.ndarray | None = None, band_m: float | None = None,
                            crossings: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Observed voxels with |sdf| <= band_m (default: truncation) inside the 2x3 AABB
        ``bounds`` (metres, optional): (coords Mx3 int32, sdf M float32 metres). crossings: also
        the observed voxels farther out that share an axis edge with an observed voxel of the
        opposite SDF sign: the corners marching cubes reads for a mesh vertex (projective TSDF
        jumps across surfaces seen at grazing angles)."""
        coords, sdf, _, _ = self._observed(bounds)
        keep = np.abs(sdf) <= (self.trunc_m if band_m is None else band_m)
        if crossings and not keep.all():
            keep |= self._sign_change_to_neighbour(coords, sdf, np.flatnonzero(~keep))
        if bounds is not None:
            c = (coords + 0.5) * self.voxel_size
            keep &= (c >= bounds[0]).all(1) & (c <= bounds[1]).all(1)
        return coords[keep].astype(np.int32), sdf[keep]

    def _sign_change_to_neighbour(self, coords: np.ndarray, sdf: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """N bool: voxel i (of ``cand``) has an axis neighbour among ``coords`` with the other SDF sign.
        Neighbours are looked up in a dense index grid over the voxels' bounding box (a fragment's
        region: a few MB; 2x faster than the map's block hash), else in the map's block hash."""
        lo = coords.min(0) - 1
        dims = coords.max(0) + 2 - lo
        positive = sdf >= 0
        out = np.zeros(len(coords), bool)
        if int(np.prod(dims)) <= _DENSE_LOOKUP_MAX_CELLS:
            strides = np.array([dims[1] * dims[2], dims[2], 1])
            grid = np.full(int(np.prod(dims)), -1, np.int32)
            grid[(coords - lo) @ strides] = np.arange(len(coords))
            flat = (coords[cand] - lo) @ strides  # the one-voxel margin keeps +-1 steps inside the box
            for nb in (grid[flat + sign * st] for st in strides for sign in (-1, 1)):
                out[cand] |= (nb >= 0) & (positive[nb] != positive[cand])
            return out
        map_sdf, map_weight = self.store.sdf.reshape(-1), self.store.weight.reshape(-1)
        for axis in range(3):
            for step in (-1, 1):
                q = coords[cand].copy()
                q[:, axis] += step
                flat = self._voxel_flat_index(q, allocate=False)  # < 0: the neighbour's block is absent
                ok = flat >= 0
                out[cand[ok]] |= (map_weight[flat[ok]] > 0) & ((map_sdf[flat[ok]] >= 0) != positive[cand[ok]])
        return out

    # -- internals -------------------------------------------------------------------------
    def _voxel_flat_index(self, coords: np.ndarray, allocate: bool) -> np.ndarray:
        B = self.cfg.block_size_vox
        blk = np.floor_divide(coords, B)
        loc = coords - blk * B
        keys = pack_block_keys(blk)
        slots = self.store.allocate(keys) if allocate else self.store.find(keys)
        return slots * self.store.V + (loc[:, 0] * B + loc[:, 1]) * B + loc[:, 2]

    def _apply(self, flat: np.ndarray, w_sum: np.ndarray, wsdf_sum: np.ndarray,
               sem: tuple[str, np.ndarray, np.ndarray | None] | None) -> None:
        """Fuse aggregated observations into unique voxels ``flat`` (slot * V + local).

        w_sum / wsdf_sum: sum of SDF weights / of weight * sdf per voxel. sem, one of
        ("average", sum of s_i q_i UxC, sum of s_i U), ("counts", label counts UxC, None) or
        ("labels", one label per voxel U with IGNORE = none, None)."""
        st = self.store
        s = flat // st.V
        # flat views of the (slots, V[, C]) arrays: one index array per access instead of two
        sdf, weight, sem_w = st.sdf.reshape(-1), st.weight.reshape(-1), st.sem_weight.reshape(-1)
        classes = st.classes.reshape(-1, st.C)
        g = w_sum > 0
        if g.any():
            fg = flat[g]
            sdf[fg], weight[fg] = F.fuse_sdf(sdf[fg], weight[fg], w_sum[g], wsdf_sum[g], self.cfg.max_weight)
        m = g
        if sem is not None:
            kind, values, n = sem
            p = self.cfg.bayes_measurement_prob
            if kind == "average":
                m = n > 0
                fm = flat[m]
                classes[fm], sem_w[fm] = F.fuse_average(classes[fm], sem_w[fm], values[m], n[m])
            elif kind == "counts":
                n = values.sum(1)
                m = n > 0
                fm = flat[m]
                classes[fm] += F.kimera_delta(values[m], p)
                sem_w[fm] += n[m]
            else:
                m = values != IGNORE
                fm = flat[m]
                classes[fm] = F.kimera_add_labels(classes[fm], values[m], p)
                sem_w[fm] += 1.0
            m = m | g
        self.tick += 1
        touched = np.unique(s[m])
        st.stamp[touched] = self.tick
        self._dirty.append(unpack_block_keys(st.slot_key[touched]))
        self.counters["voxels_fused"] += int(flat.size)

    def _enforce_cap(self) -> None:
        excess = self.num_blocks - self.cfg.max_blocks
        if excess <= 0:
            return
        slots = self.store.active_slots()
        coords = unpack_block_keys(self.store.slot_key[slots])
        if self.cfg.eviction == "farthest" and self.camera_position is not None:
            centre = (coords + 0.5) * self.cfg.block_size_vox * self.voxel_size
            order = np.argsort(-np.linalg.norm(centre - self.camera_position, axis=1), kind="stable")
        else:
            order = np.argsort(self.store.stamp[slots], kind="stable")
        victims = slots[order[:excess]]
        self._dirty.append(unpack_block_keys(self.store.slot_key[victims]))
        self.store.remove(victims)
        self.counters["blocks_evicted"] += int(excess)
        self.counters["evictions"] += 1
        log.debug("evicted %d blocks (cap %d)", excess, self.cfg.max_blocks)

    def _observed(self, bounds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Voxels with weight > 0 (in blocks touching the 2x3 AABB ``bounds``, metres, if given):
        (coords Nx3 int64, sdf N, slots N, local N)."""
        st, B = self.store, self.cfg.block_size_vox
        slots = st.active_slots()
        if bounds is not None:
            lo = unpack_block_keys(st.slot_key[slots]) * B * self.voxel_size
            hi = lo + B * self.voxel_size
            slots = slots[((hi >= bounds[0]) & (lo <= bounds[1])).all(1)]
        obs = st.weight[slots] > 0
        bi, li = np.nonzero(obs)
        sl = slots[bi]
        blk = unpack_block_keys(st.slot_key[sl])
        loc = np.stack([li // (B * B), (li // B) % B, li % B], 1)
        return blk * B + loc, st.sdf[sl, li], sl, li

    def voxel_labels(self, slots: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class index uint8, IGNORE unknown; confidence) of voxels given by slot/local index."""
        p = F.to_probabilities(self.store.classes[slots, local], self.store.sem_weight[slots, local],
                               self.cfg.fusion)
        return F.argmax_labels(p)

    def mark_changed(self, block_coords: np.ndarray) -> None:
        """Queue blocks (Mx3 block coords) for re-meshing."""
        if len(block_coords):
            self._dirty.append(np.asarray(block_coords, np.int64).reshape(-1, 3))

    # -- outputs ---------------------------------------------------------------------------
    def mesh_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Up-to-date mesh (re-meshing changed blocks only): (vertices Vx3 float32 metres,
        faces Fx3 int32, labels V uint8 class index / IGNORE, confidence V float32)."""
        if self._dirty:
            changed = unique_blocks(np.concatenate(self._dirty))
            self._dirty = []
            self._mesh.update(self.store, changed, self.voxel_size, self.cfg.fusion)
        m = self._mesh.mesh
        labels, conf = F.argmax_labels(m.probs)
        return m.vertices, m.faces(), labels, conf

    def extract_mesh(self):
        """Class-coloured mesh -> gnesf_ros.data.ply.LabeledMesh (labels NYU40 ids, 0 unknown;
        confidence = max class probability; colours from the class palette)."""
        from gnesf_ros.data.ply import LabeledMesh

        verts, faces, labels, conf = self.mesh_arrays()
        return LabeledMesh(vertices=verts, faces=faces,
                           colors=self.class_table.colorize(labels, UNKNOWN_COLOR),
                           labels=self.class_table.index_to_nyu40(labels).astype(np.int32),
                           confidence=conf)

    def _sync_raycaster(self) -> None:
        if self._dirty or self._raycaster.version != self._mesh.version:
            verts, faces, labels, _ = self.mesh_arrays()
            if self._raycaster.version != self._mesh.version:
                self._raycaster.set_mesh(verts, faces, labels, self._mesh.version)

    def render(self, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
        """(labels HxW uint8 class index, 255 unknown/no hit; depth HxW float32 z-depth metres,
        0 no hit) seen from camera T_world_cam with intrinsics K at size (height, width)."""
        self._sync_raycaster()
        return self._raycaster.render(np.asarray(T_world_cam, np.float64), np.asarray(K, np.float64), size)

    def render_labels(self, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return self.render(T_world_cam, K, size)[0]

    def render_depth(self, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return self.render(T_world_cam, K, size)[1]

    def point_cloud(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Surface points = mesh vertices: (xyz Nx3 float32 metres, labels N uint8 class index
        / 255, confidence N float32, colors Nx3 uint8 palette)."""
        verts, _, labels, conf = self.mesh_arrays()
        return verts, labels, conf, self.class_table.colorize(labels, UNKNOWN_COLOR)

    def occupancy_grid(self) -> grids.Grid2D:
        """Occupancy (0 free / 100 occupied / -1 unknown) over the map-z band
        [occupancy_min_height_m, occupancy_max_height_m] at voxel resolution."""
        coords, sdf, _, _ = self._observed()
        return grids.occupancy_grid(coords, sdf, self.voxel_size, self.cfg.occupancy_min_height_m,
                                    self.cfg.occupancy_max_height_m,
                                    self.cfg.occupied_sdf_vox * self.voxel_size)

    def class_grid(self) -> grids.Grid2D:
        """Top-down class index grid (255 unknown): highest labelled surface voxel per column
        below occupancy_max_height_m."""
        coords, sdf, sl, li = self._observed()
        labels, _ = self.voxel_labels(sl, li)
        return grids.class_grid(coords, sdf, labels, self.voxel_size, self.cfg.occupancy_max_height_m,
                                self.cfg.occupied_sdf_vox * self.voxel_size)

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Lossless map file (npz with format version, voxel size and class table), written
        atomically: a crash or kill during the save leaves the previous file, never a partial one."""
        from gnesf_ros.mapping.io import save_map

        return save_map(self, path)

    @classmethod
    def load(cls, path: str | Path, class_table: ClassTable | None = None) -> "SemanticVoxelMap":
        """Load a map written by ``save``; integration can resume on it. A file that is missing,
        empty, truncated, not an npz, lacks arrays or has another class table is a DataError
        naming the file and the reason."""
        from gnesf_ros.mapping.io import load_map

        return load_map(path, class_table)
