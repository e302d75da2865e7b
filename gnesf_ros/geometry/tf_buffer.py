"""Time-indexed tree of rigid transforms (a pure-Python tf2 ``BufferCore``; no ROS imports).

Frames form a tree: each child frame has one parent, and the edge parent -> child carries a
time series of transforms ``T_parent_child`` (maps points in the child frame into the parent
frame, metres) or one static transform. :meth:`TransformBuffer.lookup` chains edges through
the tree (e.g. ``map -> odom -> base_link -> camera_color_optical_frame``), interpolating each
dynamic edge at the requested stamp (linear in translation, SLERP in rotation), as tf2 does.

Quaternions are ``(x, y, z, w)`` like geometry_msgs. Stamps are float seconds (build them as
``sec + nanosec * 1e-9``); buffered range ends match within STAMP_EPS_S (1 us).
"""
from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from gnesf_ros.errors import GnesfError

# tf2 rejects a quaternion whose squared norm is further than this from 1.
QUATERNION_NORM_TOLERANCE = 1e-2
_MAX_CHAIN = 1000  # tf2's MAX_GRAPH_DEPTH: longer chains mean a loop
# Float seconds near today's epoch resolve ~0.2 us, and sec + nsec * 1e-9 vs ns * 1e-9 can differ
# by an ulp: range ends match within this slack on top of any tolerance.
STAMP_EPS_S = 1e-6


class TransformError(GnesfError):
    """Base of the transform errors."""


class InvalidTransformError(TransformError):
    """A transform with non-finite values, a non-unit quaternion or a non-rigid matrix."""


class LookupTransformError(TransformError):
    """A frame is unknown, or the two frames are not connected in the tree."""


class ExtrapolationError(TransformError):
    """The requested stamp lies outside the buffered time range of an edge (beyond tolerance)."""


# ----------------------------------------------------------------------------- rotation maths
def quaternion_to_matrix(q) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> 3x3 rotation. Normalises within tf2's tolerance.

    Raises InvalidTransformError for non-finite values or ``|q|^2`` further than 1e-2 from 1.
    """
    q = np.asarray(q, np.float64).reshape(-1)
    if q.shape != (4,) or not np.isfinite(q).all():
        raise InvalidTransformError(f"quaternion must be 4 finite numbers (x, y, z, w), got {q.tolist()}")
    n2 = float(q @ q)
    if abs(n2 - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise InvalidTransformError(f"quaternion {q.tolist()} is not unit length (|q| = {math.sqrt(n2):.4f})")
    x, y, z, w = q / math.sqrt(n2)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(R) -> np.ndarray:
    """3x3 rotation -> unit quaternion (x, y, z, w) with w >= 0.

    Raises InvalidTransformError unless R is finite and orthonormal with det +1 (within 1e-4).
    """
    R = np.asarray(R, np.float64)
    if R.shape != (3, 3) or not np.isfinite(R).all():
        raise InvalidTransformError("rotation must be a finite 3x3 matrix")
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or np.linalg.det(R) < 0:
        raise InvalidTransformError("matrix is not a rotation (not orthonormal or a reflection)")
    # Shepperd: pivot on the largest of w, x, y, z for numerical stability.
    tr = np.trace(R)
    cands = np.array([tr, R[0, 0], R[1, 1], R[2, 2]])
    i = int(np.argmax(cands))
    if i == 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    elif i == 1:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif i == 2:
        s = 2.0 * math.sqrt(1.0 - R[0, 0] + R[1, 1] - R[2, 2])
        q = [(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 - R[0, 0] - R[1, 1] + R[2, 2])
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def slerp(q0, q1, t: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions (x, y, z, w); t in [0, 1]; shortest arc."""
    q0 = np.asarray(q0, np.float64)
    q1 = np.asarray(q1, np.float64)
    dot = float(q0 @ q1)
    if dot < 0.0:  # q and -q are the same rotation: take the short way round
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp avoids dividing by sin(~0)
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(dot, 1.0))
    s = math.sin(theta)
    return (math.sin((1 - t) * theta) * q0 + math.sin(t * theta) * q1) / s


def make_transform(translation, quaternion) -> np.ndarray:
    """(x, y, z) metres + quaternion (x, y, z, w) -> 4x4 homogeneous transform."""
    t = np.asarray(translation, np.float64).reshape(-1)
    if t.shape != (3,) or not np.isfinite(t).all():
        raise InvalidTransformError(f"translation must be 3 finite numbers, got {t.tolist()}")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(quaternion)
    T[:3, 3] = t
    return T


def split_transform(T) -> tuple[np.ndarray, np.ndarray]:
    """4x4 rigid transform -> (translation (3,), quaternion (x, y, z, w)); validates rigidity."""
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise InvalidTransformError("transform must be a finite 4x4 matrix")
    if np.abs(T[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise InvalidTransformError(f"transform's last row must be [0 0 0 1], got {T[3].tolist()}")
    return T[:3, 3].copy(), matrix_to_quaternion(T[:3, :3])


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform."""
    Ti = np.eye(4)
    Ti[:3, :3] = T[:3, :3].T
    Ti[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return Ti


# ----------------------------------------------------------------------------- the buffer
@dataclass
class _Edge:
    """Transforms of one child frame relative to its parent, sorted by stamp."""

    parent: str
    static: bool
    stamps: list[float] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)

    def insert(self, stamp: float, t: np.ndarray, q: np.ndarray, cache_time_s: float) -> None:
        if self.static:
            self.stamps, self.translations, self.quaternions = [stamp], [t], [q]
            return
        if self.stamps and stamp < self.stamps[-1] - cache_time_s:
            return  # older than the cache keeps (tf2: TF_OLD_DATA)
        i = bisect.bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and self.stamps[i] == stamp:  # same stamp: the newer message wins
            self.translations[i], self.quaternions[i] = t, q
        else:
            self.stamps.insert(i, stamp)
            self.translations.insert(i, t)
            self.quaternions.insert(i, q)
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_time_s)
        if cut:
            del self.stamps[:cut], self.translations[:cut], self.quaternions[:cut]

    def sample(self, stamp: float, tolerance_s: float, child: str) -> np.ndarray:
        """T_parent_child at ``stamp``: interpolated inside the buffered range, the end sample
        within ``tolerance_s`` outside it, ExtrapolationError beyond."""
        if self.static:
            return make_transform(self.translations[0], self.quaternions[0])
        st = self.stamps
        slack = tolerance_s + STAMP_EPS_S
        if stamp < st[0] - slack or stamp > st[-1] + slack:
            when = "before the oldest" if stamp < st[0] else "after the newest"
            raise ExtrapolationError(
                f"{self.parent} -> {child}: time {stamp:.6f} is {when} transform "
                f"(buffered {st[0]:.6f} .. {st[-1]:.6f}, tolerance {tolerance_s:g} s)")
        i = bisect.bisect_left(st, stamp)
        if i == 0:
            return make_transform(self.translations[0], self.quaternions[0])
        if i == len(st):
            return make_transform(self.translations[-1], self.quaternions[-1])
        t0, t1 = st[i - 1], st[i]
        a = (stamp - t0) / (t1 - t0)
        tr = (1 - a) * self.translations[i - 1] + a * self.translations[i]
        return make_transform(tr, slerp(self.quaternions[i - 1], self.quaternions[i], a))

    @property
    def newest(self) -> float:
        return self.stamps[-1]


class TransformBuffer:
    """Thread-safe buffer of a transform tree over time (tf2 ``BufferCore`` semantics).

    cache_time_s: how far back each dynamic edge keeps samples (tf2 default 10 s).
    tolerance_s: how far outside an edge's buffered range a lookup may still use its end sample.
    """

    def __init__(self, cache_time_s: float = 10.0, tolerance_s: float = 0.0) -> None:
        if cache_time_s <= 0 or tolerance_s < 0:
            raise ValueError("cache_time_s must be > 0 and tolerance_s >= 0")
        self.cache_time_s = float(cache_time_s)
        self.tolerance_s = float(tolerance_s)
        self._edges: dict[str, _Edge] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ input
    def set_transform(self, parent: str, child: str, stamp: float, T=None, *,
                      translation=None, quaternion=None, static: bool = False) -> None:
        """Add ``T_parent_child`` at ``stamp`` (seconds): a 4x4 ``T`` or translation + quaternion.

        Raises InvalidTransformError for empty/equal frame names, NaN or a non-unit quaternion
        (like tf2, such a transform is rejected and the buffer is unchanged). A child that gets a
        new parent forgets its old edge.
        """
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise InvalidTransformError(f"invalid frame pair '{parent}' -> '{child}'")
        if not math.isfinite(stamp):
            raise InvalidTransformError(f"{parent} -> {child}: stamp {stamp} is not finite")
        if T is not None:
            t, q = split_transform(T)
        else:
            make_transform(translation, quaternion)  # validates
            t = np.asarray(translation, np.float64).reshape(3).copy()
            q = np.asarray(quaternion, np.float64).reshape(4)
            q = q / np.linalg.norm(q)
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                edge = self._edges[child] = _Edge(parent, static)
            edge.insert(float(stamp), t, q, self.cache_time_s)

    def clear(self) -> None:
        """Forget all dynamic transforms; static ones stay (as tf2's ``clear``)."""
        with self._lock:
            self._edges = {c: e for c, e in self._edges.items() if e.static}

    # ------------------------------------------------------------------ queries
    @property
    def frames(self) -> list[str]:
        with self._lock:
            return sorted(set(self._edges) | {e.parent for e in self._edges.values()})

    def parent_of(self, frame: str) -> str | None:
        with self._lock:
            edge = self._edges.get(frame.lstrip("/"))
            return edge.parent if edge else None

    def _path_to_root(self, frame: str) -> list[str]:
        path = [frame]
        while path[-1] in self._edges:
            path.append(self._edges[path[-1]].parent)
            if len(path) > _MAX_CHAIN:
                raise LookupTransformError(f"frame '{frame}' is part of a loop in the transform tree")
        return path

    def _chains(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Frames from target and from source up to (excluding) their common ancestor."""
        known = set(self._edges) | {e.parent for e in self._edges.values()}
        for f in (target, source):
            if f not in known:
                raise LookupTransformError(f"frame '{f}' does not exist (known: {', '.join(sorted(known)) or 'none'})")
        up_t, up_s = self._path_to_root(target), self._path_to_root(source)
        common = set(up_t) & set(up_s)
        if not common:
            raise LookupTransformError(f"'{target}' and '{source}' are not connected "
                                       f"(roots '{up_t[-1]}' and '{up_s[-1]}')")
        cut_t = next(i for i, f in enumerate(up_t) if f in common)
        cut_s = up_s.index(up_t[cut_t])
        return up_t[:cut_t], up_s[:cut_s]

    def _latest_common_time(self, frames: list[str]) -> float | None:
        dyn = [self._edges[f].newest for f in frames if not self._edges[f].static]
        return min(dyn) if dyn else None

    def lookup(self, target: str, source: str, stamp: float | None = None,
               tolerance_s: float | None = None) -> np.ndarray:
        """``T_target_source`` (4x4; maps points in ``source`` into ``target``) at ``stamp``.

        ``stamp`` None (or 0, as tf2's ``Time()``) means the latest time all edges on the chain
        share. ``tolerance_s`` overrides the buffer's tolerance for this call.
        Raises LookupTransformError (unknown / unconnected frames) or ExtrapolationError.
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        tol = self.tolerance_s if tolerance_s is None else float(tolerance_s)
        with self._lock:
            if target == source:
                if target not in self._edges and not any(e.parent == target for e in self._edges.values()):
                    raise LookupTransformError(f"frame '{target}' does not exist")
                return np.eye(4)
            chain_t, chain_s = self._chains(target, source)
            if not stamp:
                stamp = self._latest_common_time(chain_t + chain_s) or 0.0
            T_root_source = np.eye(4)
            for f in reversed(chain_s):
                T_root_source = T_root_source @ self._edges[f].sample(stamp, tol, f)
            T_root_target = np.eye(4)
            for f in reversed(chain_t):
                T_root_target = T_root_target @ self._edges[f].sample(stamp, tol, f)
        return invert_transform(T_root_target) @ T_root_source

    def can_transform(self, target: str, source: str, stamp: float | None = None,
                      tolerance_s: float | None = None) -> bool:
        try:
            self.lookup(target, source, stamp, tolerance_s)
        except TransformError:
            return False
        return True

    def time_range(self, child: str) -> tuple[float, float] | None:
        """(oldest, newest) buffered stamps of ``child``'s edge; None if unknown or static."""
        with self._lock:
            e = self._edges.get(child.lstrip("/"))
            return None if e is None or e.static else (e.stamps[0], e.stamps[-1])
