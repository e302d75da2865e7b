"""Sparse-conv backend benchmark: pure-torch submanifold conv vs dense Conv3d on the same voxels.

Active sets are surface-like shells (what the finest GNeSF level holds) inside a D^3 grid. The dense
Conv3d over the whole grid (values outside the set are zero) is the baseline measured in the same
run; the sparse output must equal the dense output read at the active voxels.

    .venv/bin/python benchmarks/sparse_conv.py [--threads 2] [--repeats 5]
Prints a markdown table; writes benchmarks/results/sparse_conv.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from gnesf_ros.model.sparse_conv import BACKEND, TORCHSPARSE_PRESENT, KernelMap, SubmConv3d


def shell(d: int, thickness: float, seed: int = 0) -> torch.Tensor:
    """Voxels of a bumpy sphere shell of the given thickness (voxels) in a d^3 grid: M x 3."""
    g = torch.Generator().manual_seed(seed)
    r = torch.arange(d, dtype=torch.float32)
    x, y, z = torch.meshgrid(r, r, r, indexing="ij")
    c = (d - 1) / 2
    rad = ((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2).sqrt()
    bump = 0.08 * d * torch.sin(x * 6.0 / d + float(torch.rand(1, generator=g)) * 6) * torch.cos(y * 5.0 / d)
    return torch.nonzero((rad - 0.38 * d - bump).abs() < thickness / 2)


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(1e3 * (time.perf_counter() - t))
    ts.sort()
    return ts[0], ts[len(ts) // 2]


def case(d: int, thickness: float, c: int, repeats: int) -> dict:
    coords = shell(d, thickness)
    m = coords.shape[0]
    t0 = time.perf_counter()
    kmap = KernelMap(coords)
    kmap_ms = 1e3 * (time.perf_counter() - t0)
    conv = SubmConv3d(c, c)
    x = torch.randn(m, c, requires_grad=True)
    dense_conv = torch.nn.Conv3d(c, c, 3, padding=1)
    with torch.no_grad():
        dense_conv.weight.copy_(conv.weight.view(3, 3, 3, c, c).permute(4, 3, 0, 1, 2))
        dense_conv.bias.copy_(conv.bias)
    full = torch.zeros(1, c, d, d, d)
    full[0, :, coords[:, 0], coords[:, 1], coords[:, 2]] = x.detach().t()
    full.requires_grad_(True)

    def sparse_fwd():
        with torch.no_grad():
            conv(x, kmap)

    def sparse_fb():
        conv(x, kmap).sum().backward()

    def dense_fwd():
        with torch.no_grad():
            dense_conv(full)

    def dense_fb():
        dense_conv(full).sum().backward()

    with torch.no_grad():
        ref = dense_conv(full)[0][:, coords[:, 0], coords[:, 1], coords[:, 2]].t()
        err = float((conv(x, kmap) - ref).abs().max())
    sf, sfb, df, dfb = (timed(f, repeats) for f in (sparse_fwd, sparse_fb, dense_fwd, dense_fb))
    return {"grid": d, "voxels": m, "occupancy": round(m / d ** 3, 4), "channels": c, "kmap_ms": round(kmap_ms, 1),
            "sparse_fwd_ms": [round(v, 1) for v in sf], "sparse_fwdbwd_ms": [round(v, 1) for v in sfb],
            "dense_fwd_ms": [round(v, 1) for v in df], "dense_fwdbwd_ms": [round(v, 1) for v in dfb],
            "fwd_speedup_vs_dense": round(df[1] / sf[1], 2), "fwdbwd_speedup_vs_dense": round(dfb[1] / sfb[1], 2),
            "max_abs_err": err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sparse_conv.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = [case(d, th, c, args.repeats) for d, th, c in
            ((48, 2.0, 16), (96, 2.0, 16), (96, 3.0, 16), (96, 3.0, 24), (128, 3.0, 16))]
    info = {"backend": BACKEND, "torchsparse_importable": TORCHSPARSE_PRESENT, "torch": torch.__version__,
            "threads": args.threads, "cpu": platform.processor() or platform.machine(), "nproc": os.cpu_count(),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        pass
    print(f"sparse conv backend: {BACKEND} (torchsparse importable: {TORCHSPARSE_PRESENT}); 3x3x3, "
          f"{args.threads} threads, min/median of {args.repeats}; load {load_before[0]:.1f} -> {info['loadavg_after'][0]:.1f}\n")
    print("| grid | voxels | C | kmap ms | sparse fwd ms | dense fwd ms | sparse fwd+bwd ms | dense fwd+bwd ms | max err |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['grid']}^3 | {r['voxels']} | {r['channels']} | {r['kmap_ms']} | {r['sparse_fwd_ms'][1]} | "
              f"{r['dense_fwd_ms'][1]} | {r['sparse_fwdbwd_ms'][1]} | {r['dense_fwdbwd_ms'][1]} | {r['max_abs_err']:.1e} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"info": info, "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
