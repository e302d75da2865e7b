"""Sparse voxel sets and 3x3x3 submanifold convolution behind one interface.

Backend: a pure-torch implementation (CPU and CUDA alike; torchsparse has no installable wheel
here, so it is detected and logged but not used, see ``BACKEND``): voxel keys are packed into
int64, sorted once, and neighbours found with ``searchsorted``; a conv gathers each voxel's 27
neighbour feature rows (empty neighbours read a zero padding row) and multiplies them with the
27*Cin x Cout weight, in chunks of voxels on the CPU so that the gathered rows stay in cache
(5x faster than one product per offset summed with ``embedding_bag`` at 80k voxels). It matches
dense ``Conv3d`` on the same active voxels to ~1e-6 and needs no compiled extension. This module
is the one place to plug a compiled backend in.

Shapes: coords M x 3 int64 voxel indices (any sign); features M x C float32.
"""
from __future__ import annotations

import itertools
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

_BITS = 21
_OFF = 1 << (_BITS - 1)  # coords in [-2^20, 2^20) voxels (+-42 km at 4 cm)
CPU_CHUNK_VOXELS = 1024  # voxels per gathered block on the CPU (27 x C floats each: fits in L2)
OFFSETS = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.long)  # 27 x 3


def _torchsparse_available() -> bool:
    try:
        import torchsparse  # noqa: F401
    except ImportError:
        return False
    return True


BACKEND = "torch"  # conv implementation in use
TORCHSPARSE_PRESENT = _torchsparse_available()  # reported by benchmarks; not wired in (untestable here)


def pack_keys(coords: torch.Tensor) -> torch.Tensor:
    """M x 3 integer voxel coords -> M int64 keys (order-preserving in x, then y, then z)."""
    c = coords.long() + _OFF
    return (c[:, 0] << (2 * _BITS)) | (c[:, 1] << _BITS) | c[:, 2]


class VoxelHash:
    """Sorted-key lookup table of a voxel set: ``lookup(coords)`` -> row index or -1."""

    def __init__(self, coords: torch.Tensor):
        keys = pack_keys(coords)
        self.keys, self.order = torch.sort(keys)
        self.num = int(coords.shape[0])

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """Q x 3 coords -> Q int64 row indices into the original set (-1 where absent)."""
        if self.num == 0:
            return torch.full((coords.shape[0],), -1, dtype=torch.long, device=coords.device)
        q = pack_keys(coords)
        pos = torch.searchsorted(self.keys, q).clamp_(max=self.num - 1)
        hit = self.keys[pos] == q
        return torch.where(hit, self.order[pos], torch.full_like(pos, -1))


class KernelMap:
    """Neighbour structure of a voxel set for 3x3x3 submanifold convs (built once per level).

    nbr: M x 27 int64 rows of the neighbours at OFFSETS; M (one past the last row) where empty."""

    def __init__(self, coords: torch.Tensor):
        self.coords = coords.long()
        m = self.coords.shape[0]
        table = VoxelHash(self.coords)
        offs = OFFSETS.to(coords.device)
        nbr = table.lookup((self.coords[:, None, :] + offs[None]).reshape(-1, 3)).view(m, 27)
        self.nbr = torch.where(nbr >= 0, nbr, torch.full_like(nbr, m))

    def __len__(self) -> int:
        return int(self.coords.shape[0])


class SubmConv3d(nn.Module):
    """3x3x3 submanifold sparse conv: output voxels = input voxels.

    weight: 27 x Cin x Cout, offset k = OFFSETS[k] (out[x] = sum_k in[x + OFFSETS[k]] @ W[k]);
    forward(features M x Cin, kmap) -> M x Cout."""

    def __init__(self, c_in: int, c_out: int, bias: bool = True):
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.weight = nn.Parameter(torch.randn(27, c_in, c_out) * (2.0 / (27 * c_in)) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None

    def forward(self, x: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        m = x.shape[0]
        if m == 0:
            return x.new_zeros(0, self.c_out)
        x = torch.cat([x, x.new_zeros(1, self.c_in)])  # row m: the empty neighbour
        w = self.weight.reshape(27 * self.c_in, self.c_out)  # rows ordered (offset, c_in) like the gather
        chunk = CPU_CHUNK_VOXELS if x.device.type == "cpu" else m
        out = torch.cat([x[kmap.nbr[s:s + chunk]].reshape(-1, 27 * self.c_in) @ w for s in range(0, m, chunk)])
        return out + self.bias if self.bias is not None else out
