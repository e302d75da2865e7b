"""Labeled triangle meshes and PLY files with a per-vertex NYU40 ``label`` (ScanNet's convention).

Writer: binary little-endian with ScanNet's ``*_vh_clean_2.labels.ply`` property names
(vertex: float x y z, uchar red green blue alpha, ushort label [, float confidence];
face: list uchar int vertex_indices). Open3D, trimesh and MeshLab read it.

Reader: a small numpy parser for ``binary_little_endian``, ``binary_big_endian`` and ``ascii``
PLY with any property order and scalar type (ScanNet, Open3D, trimesh outputs). Faces with more
than three corners are fan-triangulated; other elements (edges, materials) are skipped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gnesf_ros.errors import DataError

log = logging.getLogger(__name__)

# PLY scalar type names (both spellings) -> numpy type code without byte order.
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": "ascii"}


@dataclass
class LabeledMesh:
    """A triangle mesh (or point set when ``faces`` is empty) with per-vertex colour and class.

    vertices: Vx3 float32 metres (world frame); faces: Fx3 int32 vertex indices;
    colors: Vx3 uint8 RGB; labels: V int32 NYU40 ids (0 = unknown / unannotated);
    confidence: V float32 in [0, 1] or None.
    ``faces``/``colors``/``labels`` may be given as None: empty / grey / zeros.
    source: the file it was read from (read_labeled_ply), or None; has_labels: False when that
    file had no per-vertex ``label`` property (labels are then zeros and must not be scored).
    """

    vertices: np.ndarray
    faces: np.ndarray | None = None
    colors: np.ndarray | None = None
    labels: np.ndarray | None = None
    confidence: np.ndarray | None = None
    source: str | None = field(default=None, compare=False)
    has_labels: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(np.asarray(self.vertices, np.float32).reshape(-1, 3))
        n = len(self.vertices)
        self.faces = (np.zeros((0, 3), np.int32) if self.faces is None
                      else np.ascontiguousarray(np.asarray(self.faces, np.int32).reshape(-1, 3)))
        self.colors = (np.full((n, 3), 128, np.uint8) if self.colors is None
                       else np.ascontiguousarray(np.asarray(self.colors, np.uint8).reshape(-1, 3)))
        self.labels = (np.zeros(n, np.int32) if self.labels is None
                       else np.asarray(self.labels, np.int32).reshape(-1))
        if self.confidence is not None:
            self.confidence = np.asarray(self.confidence, np.float32).reshape(-1)
        for name in ("colors", "labels", "confidence"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"LabeledMesh.{name} has {len(arr)} rows, expected {n} (one per vertex)")
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= n):
            raise ValueError(f"LabeledMesh.faces index out of range [0, {n})")

    @property
    def num_vertices(self) -> int:
        return int(len(self.vertices))

    @property
    def num_faces(self) -> int:
        return int(len(self.faces))


def write_labeled_ply(path: str | Path, mesh: LabeledMesh) -> Path:
    """Write ``mesh`` as binary little-endian PLY (ScanNet property names). Returns the path.

    Labels are stored as ushort (NYU40 ids 0..40; values outside 0..65535 are an error)."""
    path = Path(path)
    n, f = mesh.num_vertices, mesh.num_faces
    if len(mesh.labels) and (mesh.labels.min() < 0 or mesh.labels.max() > 65535):
        raise ValueError("labels must be in 0..65535 to be stored as PLY ushort")
    vfields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
               ("blue", "u1"), ("alpha", "u1"), ("label", "<u2")]
    if mesh.confidence is not None:
        vfields.append(("confidence", "<f4"))
    vert = np.empty(n, vfields)
    vert["x"], vert["y"], vert["z"] = mesh.vertices.T
    vert["red"], vert["green"], vert["blue"] = mesh.colors.T
    vert["alpha"] = 255
    vert["label"] = mesh.labels
    if mesh.confidence is not None:
        vert["confidence"] = mesh.confidence
    face = np.empty(f, [("n", "u1"), ("v", "<i4", (3,))])
    face["n"] = 3
    face["v"] = mesh.faces
    props = "".join(f"property {_ply_name(dt)} {name}\n" for name, dt in vfields)
    header = ("ply\nformat binary_little_endian 1.0\ncomment written by gnesf_ros\n"
              f"element vertex {n}\n{props}"
              f"element face {f}\nproperty list uchar int vertex_indices\nend_header\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(vert.tobytes())
        fh.write(face.tobytes())
    return path


def _ply_name(dtype: str) -> str:
    return {"<f4": "float", "u1": "uchar", "<u2": "ushort"}[dtype]


@dataclass
class _Property:
    name: str
    dtype: str  # numpy code without byte order, e.g. "f4"
    count_dtype: str | None = None  # set for list properties


@dataclass
class _Element:
    name: str
    count: int
    props: list[_Property]


def read_labeled_ply(path: str | Path) -> LabeledMesh:
    """Read a PLY mesh or point cloud into a LabeledMesh.

    Vertex properties used: x y z (required), red green blue (uchar, or float in [0, 1]),
    ``label`` (missing -> zeros and ``has_labels`` False), ``confidence`` (missing -> None). Faces: ``vertex_indices``
    or ``vertex_index``; polygons are fan-triangulated. Raises DataError (naming the file) when the
    file is missing, truncated or not a PLY this reader understands."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"PLY file not found: {path}")
    data = path.read_bytes()
    try:
        fmt, elements, body = _parse_header(data)
        arrays = _read_body(fmt, elements, data[body:])
        mesh = _to_mesh(arrays)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    except (ValueError, IndexError, KeyError, TypeError, OverflowError, MemoryError) as e:
        raise DataError(f"{path}: corrupt PLY ({type(e).__name__}: {e})") from None
    mesh.source = str(path)
    mesh.has_labels = "label" in arrays["vertex"]
    return mesh


def require_labels(mesh: LabeledMesh, role: str = "mesh") -> None:
    """DataError naming the file when ``mesh`` was read from a PLY without a per-vertex ``label``
    property (its labels are placeholder zeros: scoring them would give mIoU 0 without a word)."""
    if not mesh.has_labels:
        where = mesh.source or "in-memory mesh"
        raise DataError(f"{where}: {role} PLY has no per-vertex 'label' property (NYU40 ids): nothing to score")


def _parse_header(data: bytes) -> tuple[str, list[_Element], int]:
    if not data.startswith(b"ply"):
        raise DataError("not a PLY file (missing 'ply' magic)")
    end = data.find(b"end_header")
    if end < 0:
        raise DataError("PLY header has no 'end_header'")
    body = data.find(b"\n", end) + 1
    if body == 0:
        raise DataError("PLY header is truncated")
    fmt = None
    elements: list[_Element] = []
    for line in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            if tok[1] not in _FORMATS:
                raise DataError(f"unsupported PLY format '{tok[1]}'")
            fmt = _FORMATS[tok[1]]
        elif tok[0] == "element":
            if len(tok) != 3 or not tok[2].isdigit():
                raise DataError(f"PLY element line '{line.strip()}' is not 'element <name> <count>'")
            elements.append(_Element(tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if not elements:
                raise DataError("PLY property before any element")
            if tok[1] == "list":
                elements[-1].props.append(_Property(tok[4], _type(tok[3]), _type(tok[2])))
            else:
                elements[-1].props.append(_Property(tok[2], _type(tok[1])))
        else:
            raise DataError(f"unexpected PLY header line '{line.strip()}'")
    if fmt is None:
        raise DataError("PLY header has no 'format' line")
    return fmt, elements, body


def _type(name: str) -> str:
    if name not in _PLY_TYPES:
        raise DataError(f"unknown PLY property type '{name}'")
    return _PLY_TYPES[name]


def _read_body(fmt: str, elements: list[_Element], body: bytes) -> dict[str, dict[str, np.ndarray]]:
    """-> {element name: {property name: array}}; list properties come back as lists of arrays."""
    if fmt == "ascii":
        return _read_ascii(elements, body)
    out: dict[str, dict[str, np.ndarray]] = {}
    off = 0
    for el in elements:
        if all(p.count_dtype is None for p in el.props):
            dt = np.dtype([(p.name, fmt + p.dtype) for p in el.props])
            need = dt.itemsize * el.count
            if off + need > len(body):
                raise DataError(f"truncated: element '{el.name}' needs {need} bytes, "
                                f"{max(len(body) - off, 0)} left")
            rec = np.frombuffer(body, dt, el.count, off)
            off += need
            out[el.name] = {p.name: rec[p.name] for p in el.props}
        else:
            out[el.name], off = _read_binary_lists(fmt, el, body, off)
    return out


def _read_binary_lists(fmt: str, el: _Element, body: bytes, off: int) -> tuple[dict, int]:
    """Element with list properties. Fast path: every row has the first row's list lengths."""
    def row_dtype(lengths: list[int]) -> np.dtype:
        fields = []
        for p, k in zip(el.props, lengths):
            if p.count_dtype is None:
                fields.append((p.name, fmt + p.dtype))
            else:
                fields += [(p.name + "#n", fmt + p.count_dtype), (p.name, fmt + p.dtype, (k,))]
        return np.dtype(fields)

    if el.count == 0:
        return {p.name: np.zeros((0, 3)) for p in el.props}, off
    # Peek the first row's list lengths.
    lengths, o = [], off
    for p in el.props:
        if p.count_dtype is None:
            o += np.dtype(p.dtype).itemsize
            lengths.append(0)
        else:
            if o + np.dtype(p.count_dtype).itemsize > len(body):
                raise DataError(f"truncated in element '{el.name}'")
            k = int(np.frombuffer(body, fmt + p.count_dtype, 1, o)[0])
            if k < 0:
                raise DataError(f"element '{el.name}': negative list length {k}")
            lengths.append(k)
            o += np.dtype(p.count_dtype).itemsize + k * np.dtype(p.dtype).itemsize
    dt = row_dtype(lengths)
    if off + dt.itemsize * el.count <= len(body):
        rec = np.frombuffer(body, dt, el.count, off)
        if all(np.all(rec[p.name + "#n"] == k) for p, k in zip(el.props, lengths) if p.count_dtype):
            return {p.name: rec[p.name] for p in el.props}, off + dt.itemsize * el.count
    # Slow path: variable-length rows (polygons of mixed size).
    cols: dict[str, list] = {p.name: [] for p in el.props}
    for _ in range(el.count):
        for p in el.props:
            if p.count_dtype is None:
                size = np.dtype(p.dtype).itemsize
                if off + size > len(body):
                    raise DataError(f"truncated in element '{el.name}'")
                cols[p.name].append(np.frombuffer(body, fmt + p.dtype, 1, off)[0])
                off += size
            else:
                csize, size = np.dtype(p.count_dtype).itemsize, np.dtype(p.dtype).itemsize
                if off + csize > len(body):
                    raise DataError(f"truncated in element '{el.name}'")
                k = int(np.frombuffer(body, fmt + p.count_dtype, 1, off)[0])
                if k < 0:
                    raise DataError(f"element '{el.name}': negative list length {k}")
                off += csize
                if off + k * size > len(body):
                    raise DataError(f"truncated in element '{el.name}'")
                cols[p.name].append(np.frombuffer(body, fmt + p.dtype, k, off))
                off += k * size
    return cols, off


def _read_ascii(elements: list[_Element], body: bytes) -> dict[str, dict[str, np.ndarray]]:
    lines = [ln for ln in body.decode("ascii", errors="replace").splitlines() if ln.strip()]
    out: dict[str, dict[str, np.ndarray]] = {}
    row = 0
    for el in elements:
        rows = lines[row:row + el.count]
        if len(rows) < el.count:
            raise DataError(f"truncated: element '{el.name}' has {len(rows)} of {el.count} rows")
        row += el.count
        if all(p.count_dtype is None for p in el.props):
            vals = np.array(" ".join(rows).split(), np.float64)
            if vals.size != el.count * len(el.props):
                raise DataError(f"element '{el.name}': expected {len(el.props)} values per row")
            vals = vals.reshape(el.count, len(el.props))
            out[el.name] = {p.name: vals[:, i].astype(p.dtype) for i, p in enumerate(el.props)}
            continue
        fixed = _ascii_fixed_rows(el, rows)
        if fixed is not None:
            out[el.name] = fixed
            continue
        cols: dict[str, list] = {p.name: [] for p in el.props}
        for ln in rows:
            tok, i = ln.split(), 0
            for p in el.props:
                if p.count_dtype is None:
                    cols[p.name].append(float(tok[i]))
                    i += 1
                else:
                    k = int(tok[i])
                    cols[p.name].append(np.array(tok[i + 1:i + 1 + k], p.dtype))
                    if len(cols[p.name][-1]) != k:
                        raise DataError(f"element '{el.name}': short list row '{ln}'")
                    i += 1 + k
        out[el.name] = cols
    return out


def _ascii_fixed_rows(el: _Element, rows: list[str]) -> dict | None:
    """Fast path for list elements whose rows all have the same lists lengths (e.g. triangles)."""
    ntok = {len(r.split()) for r in rows[:1000]}
    if len(ntok) != 1:
        return None
    try:
        vals = np.array(" ".join(rows).split(), np.float64).reshape(len(rows), ntok.pop())
    except ValueError:  # some later row differs
        return None
    cols, i = {}, 0
    for p in el.props:
        if p.count_dtype is None:
            cols[p.name] = vals[:, i].astype(p.dtype)
            i += 1
            continue
        k = int(vals[0, i]) if len(vals) else 0
        if not np.all(vals[:, i] == k) or i + 1 + k > vals.shape[1]:
            return None
        cols[p.name] = vals[:, i + 1:i + 1 + k].astype(p.dtype)
        i += 1 + k
    return cols if i == vals.shape[1] else None


def _triangulate(polys) -> np.ndarray:
    """Fixed-size ndarray (F x k) or list of index arrays -> Fx3 int32 by fan triangulation."""
    if isinstance(polys, np.ndarray) and polys.ndim == 2:
        k = polys.shape[1]
        if k < 3:
            raise DataError(f"faces with {k} corners")
        return np.concatenate([polys[:, [0, i, i + 1]] for i in range(1, k - 1)]).astype(np.int32)
    tris = [np.asarray(p)[[0, i, i + 1]] for p in polys for i in range(1, len(p) - 1)]
    return np.asarray(tris, np.int32).reshape(-1, 3)


def _to_mesh(arrays: dict[str, dict[str, np.ndarray]]) -> LabeledMesh:
    v = arrays.get("vertex")
    if v is None or not all(k in v for k in "xyz"):
        raise DataError("PLY has no vertex element with x y z")
    xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)
    colors = None
    for names in (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")):
        if all(n in v for n in names):
            c = np.stack([np.asarray(v[n]) for n in names], 1)
            if c.dtype.kind == "f":  # float colours are 0..1 (Open3D/trimesh float output)
                c = np.clip(np.round(c * 255.0), 0, 255)
            colors = c.astype(np.uint8)
            break
    labels = np.asarray(v["label"]).astype(np.int32) if "label" in v else None
    conf = np.asarray(v["confidence"]).astype(np.float32) if "confidence" in v else None
    faces = None
    f = arrays.get("face")
    if f is not None:
        key = "vertex_indices" if "vertex_indices" in f else "vertex_index" if "vertex_index" in f else None
        if key is None:
            raise DataError("PLY face element has no vertex_indices property")
        faces = _triangulate(f[key]) if len(f[key]) else None
    if faces is not None and len(faces) and (faces.min() < 0 or faces.max() >= len(xyz)):
        raise DataError(f"face index out of range (mesh has {len(xyz)} vertices)")
    return LabeledMesh(xyz, faces, colors, labels, conf)
