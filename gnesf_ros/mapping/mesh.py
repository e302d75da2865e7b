"""Block-wise, vectorised marching cubes over the sparse voxel map, with per-vertex classes.

The case table is derived at import from the cube's faces instead of being typed in: on every
face the sign changes give line segments (a face with alternating signs always separates its
negative corners, a rule that depends on the face alone, so neighbouring cells agree and the
mesh is watertight), the segments chain into closed loops, and each loop is fanned into
triangles. Triangles wind counter-clockwise seen from the positive (free-space) side, so
normals point out of objects.

A cell spans 2x2x2 voxel centres; the cells of a block are those whose minimum corner lies in
it, so meshing a block reads its +x/+y/+z neighbours too. Vertices lie on cell edges and are
keyed by (minimum voxel of the edge, axis): blocks meshed separately weld exactly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gnesf_ros.mapping.blocks import VOXEL_COORD_LIMIT, BlockStore, pack_block_keys, unique_blocks
from gnesf_ros.mapping.fusion import to_probabilities

# Corner i of a cell sits at offset (i & 1, (i >> 1) & 1, (i >> 2) & 1) voxels.
CORNER_OFFSETS = np.array([[(i >> a) & 1 for a in range(3)] for i in range(8)], np.int64)
EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
EDGE_AXIS = np.array([int(np.log2(a ^ b)) for a, b in EDGES], np.int64)  # 12
EDGE_CORNERS = np.array(EDGES, np.int64)  # 12 x 2 (lower corner first)
_EDGE_INDEX = {frozenset(e): i for i, e in enumerate(EDGES)}


def _faces() -> list[list[int]]:
    """The 6 faces as corner lists, counter-clockwise seen from outside the cube."""
    faces = []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for side in (0, 1):
            ring = []
            for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1)):  # ccw about +axis (u x v = axis)
                ring.append((side << axis) | (du << u) | (dv << v))
            faces.append(ring if side == 1 else ring[::-1])
    return faces


def _case_triangles(case: int, faces: list[list[int]]) -> list[tuple[int, int, int]]:
    neg = [(case >> c) & 1 == 1 for c in range(8)]
    succ: dict[int, int] = {}
    for ring in faces:
        crossings = []  # (position in ring, edge id, goes neg->pos in ring order)
        for k in range(4):
            a, b = ring[k], ring[(k + 1) % 4]
            if neg[a] != neg[b]:
                crossings.append((k, _EDGE_INDEX[frozenset((a, b))], neg[a]))
        if not crossings:
            continue
        if len(crossings) == 2:
            pairs = [(crossings[0], crossings[1])]
        else:  # alternating signs: cut every negative corner off on its own
            pairs = [(crossings[i], crossings[(i + 1) % 4]) for i in range(4)
                     if not crossings[i][2]]  # segment enters the negative corner, leaves it
        for x, y in pairs:
            # Orient each segment from the pos->neg crossing to the neg->pos one (in ring order);
            # the adjacent face sees a shared edge in the opposite direction, so loops close.
            start, end = (x, y) if not x[2] else (y, x)
            succ[start[1]] = end[1]
    tris = []
    while succ:
        first = next(iter(succ))
        loop = [first]
        nxt = succ.pop(first)
        while nxt != first:
            loop.append(nxt)
            nxt = succ.pop(nxt)
        for i in range(1, len(loop) - 1):
            tris.append((loop[0], loop[i], loop[i + 1]))
    return tris


def _build_table() -> np.ndarray:
    faces = _faces()
    cases = [_case_triangles(c, faces) for c in range(256)]
    table = np.full((256, max(len(t) for t in cases), 3), -1, np.int64)
    for c, tris in enumerate(cases):
        if tris:
            table[c, : len(tris)] = tris
    return table


CASE_TRIANGLES = _build_table()  # 256 x T x 3 edge ids, -1 padded
_CASE_NTRI = (CASE_TRIANGLES[:, :, 0] >= 0).sum(1)



@dataclass
class MeshPart:
    """Triangles keyed by edges. tri_keys Fx3 int64 edge keys; tri_block F int64 block keys;
    vert_keys V int64 (sorted, unique); vertices Vx3 float32 metres (map frame);
    probs VxC float32 class distribution (zero row = unknown)."""

    tri_keys: np.ndarray
    tri_block: np.ndarray
    vert_keys: np.ndarray
    vertices: np.ndarray
    probs: np.ndarray

    @staticmethod
    def empty(num_classes: int) -> "MeshPart":
        return MeshPart(np.zeros((0, 3), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                        np.zeros((0, 3), np.float32), np.zeros((0, num_classes), np.float32))

    def faces(self) -> np.ndarray:
        """Fx3 int32 indices into ``vertices``."""
        return np.searchsorted(self.vert_keys, self.tri_keys).astype(np.int32)


def edge_key(min_voxel: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Pack (voxel Nx3 within +-VOXEL_COORD_LIMIT, axis N) into int64: 20 bits per coordinate + 2."""
    v = min_voxel.astype(np.int64) + VOXEL_COORD_LIMIT
    return (((v[:, 0] << 20) | v[:, 1]) << 20 | v[:, 2]) << 2 | axis.astype(np.int64)


def march_cells(cell_min: np.ndarray, cell_block: np.ndarray, sdf: np.ndarray, valid: np.ndarray,
                corner_probs: Callable[[np.ndarray, np.ndarray], np.ndarray], voxel_size: float,
                num_classes: int) -> MeshPart:
    """Marching cubes over N cells.

    cell_min Nx3 int64 voxel coords of corner 0; cell_block N int64 block key of each cell;
    sdf Nx8 float32 metres at the corners (CORNER_OFFSETS order); valid N bool (all corners
    observed); corner_probs(cells K, corners K) -> KxC probabilities (zero = unknown).
    Voxel centres sit at (coords + 0.5) * voxel_size.
    """
    case = ((sdf < 0).astype(np.int64) << np.arange(8)).sum(1)
    active = valid & (_CASE_NTRI[case] > 0)
    if not active.any():
        return MeshPart.empty(num_classes)
    idx = np.nonzero(active)[0]
    tris = CASE_TRIANGLES[case[idx]]  # A x T x 3
    tri_ok = tris[:, :, 0] >= 0
    tri_cell = np.broadcast_to(idx[:, None], tri_ok.shape)[tri_ok]  # F
    tri_edges = tris[tri_ok]  # F x 3 local edge ids
    key_voxel = cell_min[tri_cell][:, None, :] + CORNER_OFFSETS[EDGE_CORNERS[tri_edges, 0]]
    tri_keys = edge_key(key_voxel.reshape(-1, 3), EDGE_AXIS[tri_edges].reshape(-1)).reshape(-1, 3)
    vert_keys, first = np.unique(tri_keys.reshape(-1), return_index=True)
    cell = np.repeat(tri_cell, 3)[first]
    edge = tri_edges.reshape(-1)[first]
    a, b = EDGE_CORNERS[edge, 0], EDGE_CORNERS[edge, 1]
    sa, sb = sdf[cell, a], sdf[cell, b]
    t = (sa / (sa - sb)).astype(np.float32)[:, None]
    pa = (cell_min[cell] + CORNER_OFFSETS[a] + 0.5) * voxel_size
    pb = (cell_min[cell] + CORNER_OFFSETS[b] + 0.5) * voxel_size
    verts = (pa + t * (pb - pa)).astype(np.float32)
    qa, qb = corner_probs(cell, a), corner_probs(cell, b)
    wa = np.where(qa.sum(1, keepdims=True) > 0, 1.0 - t, 0.0)  # unknown corners do not vote
    wb = np.where(qb.sum(1, keepdims=True) > 0, t, 0.0)
    norm = wa + wb
    probs = np.where(norm > 0, (wa * qa + wb * qb) / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
    return MeshPart(tri_keys, cell_block[tri_cell], vert_keys, verts, probs)


# Padded (B+1)^3 corner grid of a block: which of the 8 blocks at +{0,1}^3 holds each sample.
def _padded_layout(B: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.stack(np.meshgrid(*[np.arange(B + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    nbr = ((g >= B).astype(np.int64) << np.arange(3)).sum(1)  # same bit order as CORNER_OFFSETS
    local = g % B
    local_idx = (local[:, 0] * B + local[:, 1]) * B + local[:, 2]
    cells = np.stack(np.meshgrid(*[np.arange(B)] * 3, indexing="ij"), -1).reshape(-1, 3)
    corner = cells[:, None, :] + CORNER_OFFSETS[None]  # B^3 x 8 x 3 padded coords
    corner_pidx = (corner[..., 0] * (B + 1) + corner[..., 1]) * (B + 1) + corner[..., 2]
    return nbr, local_idx, corner_pidx


def mesh_blocks(store: BlockStore, block_coords: np.ndarray, voxel_size: float, fusion: str,
                chunk: int = 128) -> MeshPart:
    """Mesh the cells of the given blocks (Mx3 int64 block coords), in chunks of blocks."""
    B, C = store.B, store.C
    nbr, local_idx, corner_pidx = _padded_layout(B)
    cell_local = np.stack(np.meshgrid(*[np.arange(B)] * 3, indexing="ij"), -1).reshape(-1, 3)
    parts = []
    for s in range(0, len(block_coords), chunk):
        bc = block_coords[s: s + chunk]
        n = len(bc)
        nb_keys = pack_block_keys((bc[:, None, :] + CORNER_OFFSETS[None]).reshape(-1, 3))
        nb_slots = store.find(nb_keys).reshape(n, 8)
        pslot = nb_slots[:, nbr]  # n x (B+1)^3
        safe = np.maximum(pslot, 0)
        psdf = store.sdf[safe, local_idx[None]]
        pw = np.where(pslot >= 0, store.weight[safe, local_idx[None]], 0.0)
        csdf = psdf[:, corner_pidx].reshape(-1, 8)
        valid = (pw[:, corner_pidx] > 0).all(-1).reshape(-1)
        cslot = pslot[:, corner_pidx].reshape(-1, 8)
        clocal = np.broadcast_to(local_idx[corner_pidx][None], (n,) + corner_pidx.shape).reshape(-1, 8)
        cell_min = (bc[:, None, :] * B + cell_local[None]).reshape(-1, 3)
        cell_block = np.repeat(pack_block_keys(bc), B ** 3)

        def corner_probs(cells: np.ndarray, corners: np.ndarray) -> np.ndarray:
            sl, lo = cslot[cells, corners], clocal[cells, corners]
            return to_probabilities(store.classes[sl, lo], store.sem_weight[sl, lo], fusion)

        parts.append(march_cells(cell_min, cell_block, csdf, valid, corner_probs, voxel_size, C))
    return merge_parts(parts, C)


def merge_parts(parts: list[MeshPart], num_classes: int) -> MeshPart:
    """Concatenate parts; a vertex present in several parts keeps the last part's values."""
    parts = [p for p in parts if len(p.vert_keys) or len(p.tri_keys)]
    if not parts:
        return MeshPart.empty(num_classes)
    if len(parts) == 1:
        return parts[0]
    keys = np.concatenate([p.vert_keys for p in parts])
    rev = keys[::-1]
    uk, first_rev = np.unique(rev, return_index=True)
    take = len(keys) - 1 - first_rev
    return MeshPart(np.concatenate([p.tri_keys for p in parts]),
                    np.concatenate([p.tri_block for p in parts]), uk,
                    np.concatenate([p.vertices for p in parts])[take],
                    np.concatenate([p.probs for p in parts])[take])


class IncrementalMesh:
    """Mesh cache re-meshing only blocks whose cells read changed voxels."""

    def __init__(self, num_classes: int):
        self.C = num_classes
        self.mesh = MeshPart.empty(num_classes)
        self.version = 0  # bumped on every change (lets renderers cache)

    def update(self, store: BlockStore, changed_blocks: np.ndarray, voxel_size: float, fusion: str) -> None:
        """changed_blocks: Mx3 block coords whose voxels changed (or that were removed)."""
        if len(changed_blocks) == 0:
            return
        # Cells of block b read blocks b + {0,1}^3, so a change in d affects d - {0,1}^3.
        aff = unique_blocks((changed_blocks[:, None, :] - CORNER_OFFSETS[None]).reshape(-1, 3))
        aff_keys = pack_block_keys(aff)
        keep = ~np.isin(self.mesh.tri_block, aff_keys)
        aff = aff[store.find(aff_keys) >= 0]
        old = self.mesh
        new = mesh_blocks(store, aff, voxel_size, fusion)
        tri_keys = np.concatenate([old.tri_keys[keep], new.tri_keys])
        tri_block = np.concatenate([old.tri_block[keep], new.tri_block])
        merged = merge_parts([MeshPart(old.tri_keys[:0], old.tri_block[:0], old.vert_keys,
                                       old.vertices, old.probs), new], self.C)
        used = np.isin(merged.vert_keys, tri_keys)
        self.mesh = MeshPart(tri_keys, tri_block, merged.vert_keys[used], merged.vertices[used],
                             merged.probs[used])
        self.version += 1

    def clear(self) -> None:
        self.mesh = MeshPart.empty(self.C)
        self.version += 1
