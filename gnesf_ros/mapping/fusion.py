"""Per-voxel update rules (pure numpy): SDF running average and two label fusions.

- ``average``: count-weighted running average of class probabilities in float32
  (GNeSF's fusion without its uint8 count overflow).
- ``bayesian``: Kimera-Semantics' rule, exactly: per-class log-probabilities initialised
  uniform (ln 1/C); a measurement of label l adds ln(p) to class l and ln(1 - p) to every other
  class (p = measurement probability > 0.5); unknown labels add nothing; no normalisation,
  no clamping, no distance weighting. Final label: argmax, ties to the lowest index.
"""
from __future__ import annotations

import numpy as np

from gnesf_ros.classes import IGNORE
from gnesf_ros.config import ConfigError

FUSIONS = ("average", "bayesian")


def check_fusion(name: str, measurement_prob: float) -> None:
    if name not in FUSIONS:
        raise ConfigError(f"map.fusion must be one of {', '.join(FUSIONS)}, got '{name}'")
    if name == "bayesian" and not 0.5 < measurement_prob < 1.0:
        raise ConfigError(f"map.bayes_measurement_prob must be in (0.5, 1), got {measurement_prob}")


def class_init_value(fusion: str, num_classes: int) -> float:
    """Value of an unobserved voxel's class vector entries."""
    return float(np.log(1.0 / num_classes)) if fusion == "bayesian" else 0.0


def fuse_sdf(sdf0: np.ndarray, w0: np.ndarray, w_sum: np.ndarray, wsdf_sum: np.ndarray,
             max_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted running average: sdf = (w0 sdf0 + sum w_i d_i) / (w0 + sum w_i);
    the weight saturates at ``max_weight`` so the map keeps adapting."""
    w = w0 + w_sum
    sdf = np.where(w > 0, (w0 * sdf0 + wsdf_sum) / np.maximum(w, 1e-12), sdf0)
    return sdf.astype(np.float32), np.minimum(w, max_weight).astype(np.float32)


def fuse_average(p0: np.ndarray, s0: np.ndarray, ws_probs_sum: np.ndarray, ws_sum: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Count-weighted average. p0 UxC, s0 U; ws_probs_sum UxC = sum s_i q_i; ws_sum U = sum s_i."""
    s = s0 + ws_sum
    p = np.where((s > 0)[:, None], (p0 * s0[:, None] + ws_probs_sum) / np.maximum(s, 1e-12)[:, None], p0)
    return p.astype(np.float32), s.astype(np.float32)


def kimera_delta(label_counts: np.ndarray, measurement_prob: float) -> np.ndarray:
    """Log-probability increment for U voxels given UxC counts of measured labels:
    each measurement of l adds ln p to l and ln(1-p) to the others."""
    n = label_counts.sum(1, keepdims=True)
    log_p, log_q = np.log(measurement_prob), np.log(1.0 - measurement_prob)
    return (n * log_q + label_counts * (log_p - log_q)).astype(np.float32)


def hard_labels(probs: np.ndarray) -> np.ndarray:
    """NxC probabilities -> N labels for Kimera's rule: argmax (ties to the lowest index), IGNORE
    where the distribution is uniform (it carries no information)."""
    top = probs.max(1)
    uniform = top <= 1.0 / probs.shape[1] + 1e-6
    return np.where(uniform, IGNORE, probs.argmax(1)).astype(np.int64)


def kimera_add_labels(values: np.ndarray, labels: np.ndarray, measurement_prob: float) -> np.ndarray:
    """One measurement per row: values NxC log-probs + ln(1-p) everywhere, + ln p at ``labels``."""
    log_p, log_q = np.log(measurement_prob), np.log(1.0 - measurement_prob)
    out = values + np.float32(log_q)
    out[np.arange(len(labels)), labels] += np.float32(log_p - log_q)
    return out


def label_counts(group: np.ndarray, labels: np.ndarray, num_groups: int, num_classes: int) -> np.ndarray:
    """num_groups x C counts of ``labels`` (IGNORE skipped) per ``group`` index."""
    ok = labels != IGNORE
    flat = group[ok].astype(np.int64) * num_classes + labels[ok].astype(np.int64)
    return np.bincount(flat, minlength=num_groups * num_classes).reshape(num_groups, num_classes).astype(np.float32)


def to_probabilities(values: np.ndarray, sem_weight: np.ndarray, fusion: str) -> np.ndarray:
    """Stored class vectors (...xC) -> probabilities (zero rows where never observed)."""
    if fusion == "bayesian":
        e = np.exp(values - values.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
    else:
        p = values
    return np.where((sem_weight > 0)[..., None], p, 0.0).astype(np.float32)


def argmax_labels(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels uint8 with IGNORE for zero rows, confidence = max probability)."""
    conf = probs.max(-1) if probs.shape[-1] else np.zeros(probs.shape[:-1], np.float32)
    labels = np.where(conf > 0, probs.argmax(-1), IGNORE).astype(np.uint8)  # argmax ties -> lowest
    return labels, conf.astype(np.float32)
