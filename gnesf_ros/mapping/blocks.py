"""Sparse voxel-block storage: a vectorised hash (sorted int64 keys + searchsorted) over slots.

Each block holds B^3 voxels (x-major: local index = (lx * B + ly) * B + lz) with an SDF
(metres), an SDF weight, a class vector (probabilities or Kimera log-probabilities, float32)
and a semantic weight (the number / weight of class observations). Storage grows by doubling;
evicted slots are reused.
"""
from __future__ import annotations

import numpy as np

KEY_BITS = 21
KEY_OFFSET = 1 << (KEY_BITS - 1)
# Voxel coordinates are limited to [-2^19, 2^19) so that mesh edge keys fit in int64
# (at 4 cm: +-21 km). Voxels outside are skipped and counted.
VOXEL_COORD_LIMIT = 1 << 19


def pack_block_keys(block: np.ndarray) -> np.ndarray:
    """Block coords Nx3 int -> N int64 keys (order-preserving per axis)."""
    b = block.astype(np.int64) + KEY_OFFSET
    return (b[:, 0] << (2 * KEY_BITS)) | (b[:, 1] << KEY_BITS) | b[:, 2]


def unpack_block_keys(keys: np.ndarray) -> np.ndarray:
    mask = (1 << KEY_BITS) - 1
    k = keys.astype(np.int64)
    return np.stack([(k >> (2 * KEY_BITS)) & mask, (k >> KEY_BITS) & mask, k & mask], 1) - KEY_OFFSET


def unique_blocks(block: np.ndarray) -> np.ndarray:
    """Unique rows of Nx3 block coords (sorted by key); much faster than np.unique(axis=0)."""
    return unpack_block_keys(np.unique(pack_block_keys(block)))


class BlockStore:
    """Slots of per-block voxel arrays, addressed by packed block keys."""

    def __init__(self, block_size: int, num_classes: int, class_init: float, soft_capacity: int = 0):
        self.B = block_size
        self.soft_capacity = soft_capacity  # growth stops doubling past this many slots (0: no limit)
        self.V = block_size ** 3
        self.C = num_classes
        self.class_init = class_init  # initial class value (0 for averages, log(1/C) for Kimera)
        self._sorted_keys = np.zeros(0, np.int64)
        self._sorted_slots = np.zeros(0, np.int64)
        self.slot_key = np.zeros(0, np.int64)
        self.active = np.zeros(0, bool)
        self.sdf = np.zeros((0, self.V), np.float32)
        self.weight = np.zeros((0, self.V), np.float32)
        self.classes = np.zeros((0, self.V, num_classes), np.float32)
        self.sem_weight = np.zeros((0, self.V), np.float32)
        self.stamp = np.zeros(0, np.int64)  # update tick of the last change

    # -- lookup --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._sorted_keys.size)

    @property
    def capacity(self) -> int:
        return int(self.slot_key.size)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Slots of ``keys`` (-1 where absent)."""
        if self._sorted_keys.size == 0:
            return np.full(keys.shape, -1, np.int64)
        pos = np.searchsorted(self._sorted_keys, keys)
        pos = np.minimum(pos, self._sorted_keys.size - 1)
        hit = self._sorted_keys[pos] == keys
        return np.where(hit, self._sorted_slots[pos], -1)

    def active_slots(self) -> np.ndarray:
        return self._sorted_slots.copy()

    def active_keys(self) -> np.ndarray:
        return self._sorted_keys.copy()

    # -- allocation ----------------------------------------------------------------------
    def allocate(self, keys: np.ndarray) -> np.ndarray:
        """Slots of ``keys``, creating the missing blocks (initialised empty)."""
        keys = np.asarray(keys, np.int64)
        slots = self.find(keys)
        missing = np.unique(keys[slots < 0])
        if missing.size:
            free = np.nonzero(~self.active)[0]
            if free.size < missing.size:
                self._grow(missing.size - free.size)
                free = np.nonzero(~self.active)[0]
            new = free[: missing.size]
            self._reset_slots(new)
            self.active[new] = True
            self.slot_key[new] = missing
            self._reindex()
            slots = self.find(keys)
        return slots

    def remove(self, slots: np.ndarray) -> None:
        slots = np.asarray(slots, np.int64)
        self.active[slots] = False
        self._reindex()

    def _reset_slots(self, slots: np.ndarray) -> None:
        self.sdf[slots] = 0.0
        self.weight[slots] = 0.0
        self.classes[slots] = self.class_init
        self.sem_weight[slots] = 0.0
        self.stamp[slots] = 0

    def _grow(self, extra: int) -> None:
        double = max(2 * self.capacity, 64)
        if self.soft_capacity:
            double = min(double, self.soft_capacity)
        new_cap = max(double, self.capacity + extra)
        add = new_cap - self.capacity

        def ext(a: np.ndarray) -> np.ndarray:
            # np.zeros maps fresh zero pages lazily: only the copied part is written now (a
            # concatenate would also write the new, still unused, slots)
            out = np.zeros((a.shape[0] + add,) + a.shape[1:], a.dtype)
            out[: a.shape[0]] = a
            return out

        self.slot_key, self.active, self.stamp = ext(self.slot_key), ext(self.active), ext(self.stamp)
        self.sdf, self.weight, self.sem_weight = ext(self.sdf), ext(self.weight), ext(self.sem_weight)
        self.classes = ext(self.classes)

    def _reindex(self) -> None:
        slots = np.nonzero(self.active)[0]
        order = np.argsort(self.slot_key[slots], kind="stable")
        self._sorted_slots = slots[order].astype(np.int64)
        self._sorted_keys = self.slot_key[self._sorted_slots]

    def memory_bytes(self) -> int:
        return int(sum(a.nbytes for a in (self.sdf, self.weight, self.classes, self.sem_weight,
                                            self.slot_key, self.active, self.stamp,
                                            self._sorted_keys, self._sorted_slots)))
