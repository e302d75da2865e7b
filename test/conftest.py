"""Shared test setup: deterministic, single-threaded numerics (the CI machine has 2 cores)."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:  # torch is optional for most tests; keep it to one thread when present
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
