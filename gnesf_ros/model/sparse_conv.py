"""Sparse voxel sets and 3x3x3 submanifold convolution behind one interface.

Backend: a pure-torch implementation (CPU and CUDA alike; torchsparse has no installable wheel
here, so it is detected and logged but not used, see ``BACKEND``): voxel keys are packed into int64, sorted once, and neighbours found with ``searchsorted``; a conv
is one matmul ``x @ W`` (M x 27*Cout) followed by one fused gather-sum over the 27 offsets
(``embedding_bag``, autograd included); empty neighbours point at a skipped padding row. It matches dense ``Conv3d`` on the same active voxels to ~1e-6 and
needs no compiled extension. This module is the one place to plug a compiled backend in.

Shapes: coords M x 3 int64 voxel indices (any sign); features M x C float32.
"""
from __future__ import annotations

import itertools
import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

_BITS = 21
_OFF = 1 << (_BITS - 1)  # coords in [-2^20, 2^20) voxels (+-42 km at 4 cm)
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

    gather: M x 27 int64 rows into the flattened (M*27 + 1) x C per-offset products; the extra
    last row (index M*27) stands in for empty neighbours and is skipped (padding_idx)."""

    def __init__(self, coords: torch.Tensor):
        self.coords = coords.long()
        m = self.coords.shape[0]
        table = VoxelHash(self.coords)
        offs = OFFSETS.to(coords.device)
        nbr = table.lookup((self.coords[:, None, :] + offs[None]).reshape(-1, 3)).view(m, 27)
        k = torch.arange(27, device=coords.device)[None]
        self.gather = torch.where(nbr >= 0, nbr * 27 + k, torch.full_like(nbr, m * 27))  # M x 27

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
        # a zero input row gives 27 zero product rows; row m*27 is the empty-neighbour padding
        x = torch.cat([x, x.new_zeros(1, self.c_in)])
        y = (x @ self.weight.permute(1, 0, 2).reshape(self.c_in, 27 * self.c_out)).reshape((m + 1) * 27, self.c_out)
        # sum over the 27 neighbours' products: embedding_bag is one fused gather-sum (and its backward)
        out = F.embedding_bag(kmap.gather, y, mode="sum", padding_idx=m * 27)
        return out + self.bias if self.bias is not None else out
