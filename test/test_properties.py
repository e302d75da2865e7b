"""Property-based tests (Hypothesis) of the parsers and validators that take user input.

Every property has the same shape: arbitrary (truncated, bit-flipped, random-field) input either
gives valid data or raises the project's own error type -- never another exception, never a hang.
Runs derandomized (the same examples every run: a CI failure reproduces locally with the printed
falsifying example) and within ~30 s on 2 cores. ``GNESF_PROPERTY_SCALE=20 pytest test/test_properties.py``
explores 20x as many examples at random (Hypothesis prints the seed of a failure: rerun with
``--hypothesis-seed=<seed>``).
"""
from __future__ import annotations

import math
import os
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from gnesf_ros.config import CameraConfig, ConfigError, MapperConfig, load_config
from gnesf_ros.data import open_scene
from gnesf_ros.data.ply import LabeledMesh, read_labeled_ply, write_labeled_ply
from gnesf_ros.data.sens import SensWriter
from gnesf_ros.errors import DataError, GnesfError
from gnesf_ros.geometry.camera import CameraModelError, is_valid_pose, validate_camera

SCALE = max(int(os.environ.get("GNESF_PROPERTY_SCALE", "1")), 1)
PROPS = settings(derandomize=SCALE == 1, deadline=None, database=None, print_blob=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                        HealthCheck.data_too_large])


def props(max_examples: int) -> settings:
    return settings(PROPS, max_examples=max_examples * SCALE)


def mostly(draw, good, bad, one_in: int = 4):
    """Draw from ``good``, but from ``bad`` one time in ``one_in``."""
    return draw(bad) if draw(st.integers(0, one_in - 1)) == 0 else draw(good)


SLOW_S = 10.0  # one example taking longer than this counts as a hang


def _event(text: str) -> None:
    if currently_in_test_context():  # coverage of the outcomes: pytest --hypothesis-show-statistics
        event(text)


def _timed(fn, *args):
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        assert time.perf_counter() - t0 < SLOW_S, f"{fn.__name__} took {time.perf_counter() - t0:.1f} s"


# ----------------------------------------------------------------------------- .sens
SENS_COLOR, SENS_DEPTH = (12, 16), (6, 8)
K_SENS_COLOR = np.array([[16.0, 0, 7.5], [0, 16.0, 5.5], [0, 0, 1]])
K_SENS_DEPTH = np.array([[8.0, 0, 3.5], [0, 8.0, 2.5], [0, 0, 1]])
SENS_NAME = "gnesf_ros"
HEADER_FIELDS = struct.Struct("<IQ9s64fii4IfQ")  # version, name length, name, 4 matrices, formats, count


@pytest.fixture(scope="module")
def sens_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("sens") / "s.sens"
    rng = np.random.default_rng(0)
    w = SensWriter(path, K_SENS_COLOR, SENS_COLOR, K_SENS_DEPTH, SENS_DEPTH, sensor_name=SENS_NAME)
    for i in range(3):
        rgb = rng.integers(0, 255, (*SENS_COLOR, 3), dtype=np.uint8)
        jpeg = cv2.imencode(".jpg", rgb)[1].tobytes()
        T = np.eye(4)
        T[:3, 3] = [0.1 * i, 0, 0]
        w.add(T, jpeg, rng.integers(0, 4000, SENS_DEPTH, dtype=np.uint16), 1000 * i)
    w.close()
    return path.read_bytes()


def _read_sens(path: Path) -> int:
    """Open and decode every frame like gnesf-map does; check what comes out is well formed."""
    src = open_scene(path)
    n = 0
    for f in src:
        h, w = src.size
        assert f.rgb.shape == (h, w, 3) and f.rgb.dtype == np.uint8
        assert f.depth.shape == (h, w) and np.isfinite(f.depth).all() and (f.depth >= 0).all()
        assert np.isfinite(f.K).all() and f.K[0, 0] > 0 and f.K[1, 1] > 0
        assert is_valid_pose(f.T_world_cam) and math.isfinite(f.stamp)
        n += 1
    return n


def _sens_outcome(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "x.sens"
    path.write_bytes(data)
    try:
        outcome = f"ok {_timed(_read_sens, path)}"
    except DataError as e:
        assert str(path) in str(e), f"error does not name the file: {e}"
        outcome = "error"
    _event(f"sens: {outcome}")
    return outcome


def test_sens_fixture_parses(sens_bytes, tmp_path):
    assert _sens_outcome(tmp_path, sens_bytes) == "ok 3"


@props(60)
@given(cut=st.integers(0, 10 ** 6))
def test_sens_truncated_anywhere_is_an_error_or_whole(sens_bytes, tmp_path, cut):
    cut %= len(sens_bytes) + 1
    outcome = _sens_outcome(tmp_path, sens_bytes[:cut])
    if cut < len(sens_bytes) - 8:  # only the trailing IMU count may go missing unnoticed
        assert outcome == "error", cut


@props(80)
@given(flips=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), min_size=1, max_size=6))
def test_sens_flipped_bytes_parse_or_raise_data_error(sens_bytes, tmp_path, flips):
    data = bytearray(sens_bytes)
    for pos, value in flips:
        data[pos % len(data)] = value
    _sens_outcome(tmp_path, bytes(data))


_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([0.0, 1.0, -1.0, 7.5, 16.0, 3.5, 8.0, 1000.0]))
# index into HEADER_FIELDS -> values to try there (3..66: the four matrices, 67..68 compression,
# 69..72 colour w, h, depth w, h, 73 depth shift, 74 frame count)
_FIELD_VALUES = {0: st.sampled_from([3, 0, 2 ** 32 - 1]), 1: st.sampled_from([0, 8, 10, 2 ** 63]),
                 67: st.sampled_from([0, 1, -1, 7]), 68: st.sampled_from([0, 2, -1, 9]),
                 **{i: st.sampled_from([0, 1, 6, 8, 12, 16, 17, 24, 2 ** 31, 2 ** 32 - 1]) for i in range(69, 73)},
                 73: _floats, 74: st.sampled_from([0, 1, 2, 4, 2 ** 40, 2 ** 64 - 1])}


@st.composite
def header_edits(draw) -> list[tuple[int, object]]:
    edits = []
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.sampled_from([*range(3, 67), *_FIELD_VALUES, 3, 5, 8, 9, 35, 37, 40, 41]))  # K entries twice
        edits.append((i, draw(_FIELD_VALUES.get(i, _floats))))
    return edits


@props(100)
@given(edits=header_edits())
@example(edits=[])
def test_sens_random_header_fields_parse_or_raise_data_error(sens_bytes, tmp_path, edits):
    fields = list(HEADER_FIELDS.unpack_from(sens_bytes))
    for i, v in edits:
        fields[i] = v
    header = HEADER_FIELDS.pack(*fields)
    outcome = _sens_outcome(tmp_path, header + sens_bytes[HEADER_FIELDS.size:])
    if outcome.startswith("ok"):  # whatever parsed has usable cameras
        validate_camera(np.array(fields[3:19]).reshape(4, 4), (fields[70], fields[69]), "colour")
        validate_camera(np.array(fields[35:51]).reshape(4, 4), (fields[72], fields[71]), "depth")


# ----------------------------------------------------------------------------- PLY
PLY_TYPES = ["char", "uchar", "short", "ushort", "int", "uint", "float", "double", "int8", "uint8",
             "float32", "float64", "int64", "bogus"]
VERTEX_PROPS = ["x", "y", "z", "red", "green", "blue", "alpha", "label", "confidence", "nx"]


@st.composite
def ply_files(draw) -> bytes:
    fmt = draw(st.sampled_from(["binary_little_endian", "binary_big_endian", "ascii", "ascii", "binary_mixed"]))
    lines = ["ply", f"format {fmt} 1.0"]
    if draw(st.booleans()):
        lines.append("comment " + draw(st.text(st.characters(codec="ascii", exclude_characters="\r\n"), max_size=20)))
    for name in draw(st.lists(st.sampled_from(["vertex", "vertex", "face", "edge"]), min_size=0, max_size=3)):
        count = draw(st.one_of(st.integers(0, 6), st.sampled_from(["-1", "1e3", "x", "99999999999"])))
        lines.append(f"element {name} {count}")
        if name == "face" and draw(st.booleans()):
            lines.append(f"property list {draw(st.sampled_from(['uchar', 'int', 'char', 'float']))} "
                         f"{draw(st.sampled_from(['int', 'uint', 'float', 'short']))} "
                         f"{draw(st.sampled_from(['vertex_indices', 'vertex_index', 'other']))}")
        for prop in draw(st.lists(st.sampled_from(VERTEX_PROPS), max_size=8)):
            if draw(st.integers(0, 9)) == 0:
                lines.append(f"property list uchar {draw(st.sampled_from(PLY_TYPES))} {prop}")
            else:
                lines.append(f"property {draw(st.sampled_from(PLY_TYPES))} {prop}")
    if draw(st.integers(0, 9)) == 0:
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from(["property float x", "element",
                                                                           "garbage line", "format ascii"])))
    header = ("\n".join(lines) + "\nend_header\n").encode()
    if fmt == "ascii":
        rows = draw(st.lists(st.lists(st.sampled_from(["0", "1", "2", "3", "-1", "0.5", "nan", "inf", "1e40",
                                                        "x", "300"]), max_size=10), max_size=10))
        body = "\n".join(" ".join(r) for r in rows).encode()
    else:
        body = draw(st.binary(max_size=400))
    return header + body


_NP = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4", "uint": "u4", "float": "f4",
       "double": "f8"}


@st.composite
def consistent_ply_files(draw) -> bytes:
    """Well-formed PLY (random property types and order, triangles or polygons, any format) with
    random values, sometimes cut short: mostly parses."""
    fmt = draw(st.sampled_from(["binary_little_endian", "binary_big_endian", "ascii"]))
    props = draw(st.permutations(["x", "y", "z", *draw(st.lists(st.sampled_from(VERTEX_PROPS[3:]), max_size=4,
                                                                 unique=True))]))
    types = [draw(st.sampled_from(sorted(_NP))) for _ in props]
    n, f = draw(st.integers(0, 8)), draw(st.integers(0, 4))
    count_t, index_t = draw(st.sampled_from(["uchar", "int"])), draw(st.sampled_from(["int", "uint", "short"]))
    head = [f"ply\nformat {fmt} 1.0\nelement vertex {n}"] + [f"property {t} {p}" for t, p in zip(types, props)]
    head += [f"element face {f}", f"property list {count_t} {index_t} vertex_indices", "end_header\n"]
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    vals = [[rng.integers(-2, 12) if t not in ("float", "double") else rng.normal() for t in types] for _ in range(n)]
    faces = [rng.integers(-1, n + 2, draw(st.integers(0, 5))) for _ in range(f)]
    if fmt == "ascii":
        body = "".join(" ".join(str(v) for v in row) + "\n" for row in vals)
        body += "".join(" ".join(map(str, [len(fc), *fc])) + "\n" for fc in faces)
        data = "\n".join(head).encode() + body.encode()
    else:
        o = "<" if fmt == "binary_little_endian" else ">"
        out = bytearray()
        for row in vals:
            for t, v in zip(types, row):
                out += np.array(v).astype(o + _NP[t]).tobytes()
        for fc in faces:
            out += np.array(len(fc)).astype(o + _NP[count_t]).tobytes() + np.array(fc).astype(o + _NP[index_t]).tobytes()
        data = "\n".join(head).encode() + bytes(out)
    if draw(st.integers(0, 4)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return data


def _ply_outcome(path: Path) -> str:
    try:
        mesh = _timed(read_labeled_ply, path)
    except DataError as e:
        assert str(path) in str(e), f"error does not name the file: {e}"
        _event("ply: error")
        return "error"
    _event("ply: ok")
    assert isinstance(mesh, LabeledMesh)
    n = mesh.num_vertices
    assert mesh.vertices.shape == (n, 3) and mesh.labels.shape == (n,) and mesh.colors.shape == (n, 3)
    assert mesh.faces.ndim == 2 and mesh.faces.shape[1] == 3
    assert not len(mesh.faces) or (mesh.faces.min() >= 0 and mesh.faces.max() < n)
    return "ok"


@props(200)
@given(data=st.one_of(ply_files(), consistent_ply_files()))
def test_ply_random_headers_parse_or_raise_data_error(tmp_path, data):
    path = tmp_path / "x.ply"
    path.write_bytes(data)
    _ply_outcome(path)


@props(80)
@given(cut=st.one_of(st.just(-1), st.integers(0, 10 ** 6)),
       flips=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=4))
def test_ply_truncated_or_flipped_parse_or_raise_data_error(tmp_path, cut, flips):
    mesh = LabeledMesh(np.arange(18, dtype=np.float32).reshape(6, 3), faces=[[0, 1, 2], [3, 4, 5]],
                       labels=[1, 2, 3, 4, 5, 6], confidence=np.linspace(0, 1, 6))
    data = bytearray(write_labeled_ply(tmp_path / "good.ply", mesh).read_bytes())
    for pos, value in flips:
        data[pos % len(data)] = value
    path = tmp_path / "x.ply"
    path.write_bytes(bytes(data if cut < 0 else data[:cut % (len(data) + 1)]))
    _ply_outcome(path)


# ----------------------------------------------------------------------------- YAML configs
def _known_keys(cls=MapperConfig) -> dict:
    import dataclasses

    out = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = _known_keys(type(default)) if dataclasses.is_dataclass(default) else default
    return out


KNOWN = _known_keys()
_values = st.one_of(st.integers(-3, 10 ** 6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.none(), st.text(max_size=8), st.sampled_from(["cpu", "oracle", "rgbd", "prob_vis", "1e-3"]),
                    st.lists(st.integers(-2, 64), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                               max_size=2))


@st.composite
def config_mappings(draw, known=KNOWN, depth=0):
    out = {}
    keys = {mostly(draw, st.sampled_from(sorted(known)), st.text(max_size=6), 8) for _ in range(draw(st.integers(0, 4)))}
    for key in sorted(keys):
        sub = known.get(key)
        if isinstance(sub, dict) and depth < 2 and draw(st.integers(0, 4)):
            out[key] = draw(config_mappings(sub, depth + 1))
        elif key in known and not isinstance(sub, (dict, tuple)) and draw(st.integers(0, 4)):
            out[key] = draw(_plausible(sub))  # the default's type, a value near it
        else:
            out[key] = draw(_values)
    return out


def _plausible(default):
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(max(default // 2, 0), default * 2 + 1)
    if isinstance(default, float):
        return st.floats(default / 2, default * 2 + 0.1)
    return st.just(default)


@props(150)
@given(mapping=config_mappings(), as_file=st.booleans())
def test_config_random_mappings_give_config_error_or_a_config(tmp_path, mapping, as_file):
    try:
        if as_file:
            path = tmp_path / "c.yaml"
            path.write_text(yaml.safe_dump(mapping))
            cfg = _timed(load_config, path)
        else:
            cfg = _timed(load_config, None, mapping)
    except ConfigError:
        _event("config: error")
        return
    _event("config: ok")
    assert isinstance(cfg, MapperConfig)
    assert cfg.camera.width >= 1 and cfg.camera.height >= 1


@props(60)
@given(text=st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin-1"))),
       raw=st.binary(max_size=40))
def test_config_random_files_give_config_error_or_a_config(tmp_path, text, raw):
    path = tmp_path / "c.yaml"
    for content in (text.encode("utf-8", "surrogatepass"), raw):
        path.write_bytes(content)
        try:
            assert isinstance(_timed(load_config, path), MapperConfig)
        except ConfigError:
            pass


# ----------------------------------------------------------------------------- intrinsics
def _is_valid_pinhole(fx, fy, cx, cy, skew, bottom, h, w) -> bool:
    """The specification validate_camera implements, written out independently."""
    values = [fx, fy, cx, cy, skew, *bottom]
    if not all(math.isfinite(v) for v in values) or h < 1 or w < 1:
        return False
    if fx <= 0 or fy <= 0 or skew != 0 or list(bottom) != [0.0, 0.0, 1.0]:
        return False
    if not all(0.01 <= math.degrees(2 * math.atan2(n / 2, f)) <= 179 for n, f in ((w, fx), (h, fy))):
        return False
    inside = -0.5 <= cx <= w - 0.5 and -0.5 <= cy <= h - 0.5
    central = abs(cx + 0.5 - w / 2) <= 0.2 * w and abs(cy + 0.5 - h / 2) <= 0.2 * h
    return inside and central


_coef = st.one_of(st.floats(-2000, 2000), st.sampled_from([0.0, -0.0, float("nan"), float("inf"), -float("inf"),
                                                            1e-300, 5e-324, 1.0]))


@st.composite
def cameras(draw):
    """A valid pinhole camera (principal point anywhere in the allowed region, its edges included),
    then 0-2 of its fields replaced by arbitrary values."""
    h, w = draw(st.integers(1, 2000)), draw(st.integers(1, 2000))
    rel = st.one_of(st.floats(0.3, 0.7), st.sampled_from([0.3, 0.7, 0.5]))
    cam = {"fx": draw(st.floats(1e-3, 1e4)), "fy": draw(st.floats(1e-3, 1e4)),
           "cx": draw(rel) * w - 0.5, "cy": draw(rel) * h - 0.5, "skew": 0.0, "bottom": (0.0, 0.0, 1.0),
           "h": h, "w": w}
    for key in draw(st.lists(st.sampled_from(sorted(cam)), max_size=2, unique=True)):
        if key in ("h", "w"):
            cam[key] = draw(st.integers(-2, 4000))
        elif key == "bottom":
            cam[key] = draw(st.tuples(_coef, _coef, _coef))
        else:
            cam[key] = draw(_coef)
    return cam


@props(400)
@given(cam=cameras(), as_4x4=st.booleans())
@example(cam=dict(fx=500.0, fy=500.0, cx=319.5, cy=239.5, skew=0.0, bottom=(0.0, 0.0, 1.0), h=480, w=640),
         as_4x4=True)
@example(cam=dict(fx=500.0, fy=500.0, cx=319.5, cy=239.5, skew=0.0, bottom=(0.0, 0.0, 1.0), h=968, w=1296),
         as_4x4=False)
def test_validate_camera_accepts_exactly_the_valid_pinhole_models(cam, as_4x4):
    fx, fy, cx, cy, skew, bottom, h, w = (cam[k] for k in ("fx", "fy", "cx", "cy", "skew", "bottom", "h", "w"))
    K = np.array([[fx, skew, cx], [0.0, fy, cy], list(bottom)])
    if as_4x4:
        M = np.eye(4)
        M[:3, :3] = K
        K = M
    want = _is_valid_pinhole(fx, fy, cx, cy, skew, bottom, h, w)
    _event(f"camera valid: {want}")
    try:
        got = validate_camera(K, (h, w), "cam")
    except CameraModelError as e:
        assert not want, f"valid camera refused: {e}"
        assert str(e).startswith("cam: ")
        return
    assert want, f"invalid camera accepted: K={K.tolist()} size={(h, w)}"
    np.testing.assert_array_equal(got, K[:3, :3])


# ----------------------------------------------------------------------------- poses
def _rotation(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


_quat = st.tuples(*[st.floats(-1, 1)] * 4).filter(lambda q: np.linalg.norm(q) > 0.1)
_trans = st.tuples(*[st.floats(-1e4, 1e4)] * 3)


@props(150)
@given(q=_quat, t=_trans, scale=st.floats(0.5, 2.0), defect=st.sampled_from(
    ["none", "scale", "reflect", "nan", "inf", "last_row", "shape"]), where=st.integers(0, 15))
def test_is_valid_pose_accepts_rigid_transforms_only(q, t, scale, defect, where):
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = _rotation(q), t
    assert is_valid_pose(T)
    if defect == "scale":
        assume(abs(scale - 1) > 0.02)
        T[:3, :3] *= scale
    elif defect == "reflect":
        T[:3, :3] = T[:3, :3] @ np.diag([1.0, 1.0, -1.0])
    elif defect in ("nan", "inf"):
        T.flat[where] = np.nan if defect == "nan" else -np.inf
    elif defect == "last_row":
        T[3, where % 4] += 0.5
    elif defect == "shape":
        T = T[:3]
    assert is_valid_pose(T) == (defect == "none")


@props(100)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=16, max_size=16))
def test_is_valid_pose_never_raises(values):
    T = np.array(values).reshape(4, 4)
    ok = is_valid_pose(T)
    assert isinstance(ok, bool)
    if ok:
        R = T[:3, :3]
        assert np.isfinite(T).all() and np.allclose(R.T @ R, np.eye(3), atol=0.05)


# ----------------------------------------------------------------------------- ROS message fields
ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1", "mono16", "32FC1", "8UC3", "yuv422", "", "rgb16"]
BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "16UC1": 2, "mono16": 2, "32FC1": 4}


@st.composite
def images(draw, encodings=ENCODINGS[:5], bad_encodings=ENCODINGS[5:], max_side=12, like=None):
    """sensor_msgs/Image: mostly well formed (one of ``encodings``, step = row bytes, data = height x
    step), sometimes with a wrong encoding, size, step or data length."""
    from sensor_msgs.msg import Image

    msg = Image()
    msg.encoding = mostly(draw, st.sampled_from(encodings), st.sampled_from(bad_encodings), 6)
    side = st.integers(1, max_side)
    bad_side = st.sampled_from([0, 2 ** 31, 2 ** 32 - 1])
    msg.height, msg.width = mostly(draw, side, bad_side, 8), mostly(draw, side, bad_side, 8)
    if like is not None and draw(st.integers(0, 3)):  # registered depth: the colour image's size
        msg.height, msg.width = like.height, like.width
    row = (msg.width * BYTES_PER_PIXEL.get(msg.encoding, 3)) % 2 ** 32
    msg.step = mostly(draw, st.one_of(st.just(row), st.just(row + 4)),
                      st.one_of(st.integers(0, 80), st.just(2 ** 32 - 1)), 6)
    msg.is_bigendian = draw(st.integers(0, 1))
    n = msg.height * msg.step
    length = mostly(draw, st.just(n), st.integers(0, 2000), 6) if n <= 4000 else draw(st.integers(0, 2000))
    if msg.encoding == "32FC1" and length == n and draw(st.booleans()):  # plausible depth: finite metres, NaN holes
        vals = draw(st.lists(st.sampled_from([0.0, 0.5, 1.5, 3.0, float("nan"), float("inf"), -1.0]),
                             min_size=length // 4, max_size=length // 4))
        msg.data = np.array(vals, ">f4" if msg.is_bigendian else "<f4").tobytes()
    else:
        msg.data = draw(st.binary(min_size=length, max_size=length))
    return msg


@st.composite
def camera_infos(draw, size):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    h, w = size
    info.height, info.width = mostly(draw, st.just((h, w)), st.sampled_from([(h + 1, w), (0, 0), (h, 2 * w)]), 8)
    fx, fy = mostly(draw, st.floats(0.5, 50), _coef, 8), mostly(draw, st.floats(0.5, 50), _coef, 8)
    cx = mostly(draw, st.just((w - 1) / 2.0), _coef, 8)
    cy = mostly(draw, st.just((h - 1) / 2.0), _coef, 8)
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, mostly(draw, st.just(1.0), st.sampled_from([0.0, float("nan")]), 8)]
    return info


@props(250)
@given(data=st.data())
def test_to_frame_gives_a_frame_or_input_rejected(data):
    from gnesf_ros.ros.inputs import InputRejected, check_image, to_frame
    from gnesf_ros.ros.sync import SyncedInput

    color = data.draw(images(), "color")
    size = (min(int(color.height), 64), min(int(color.width), 64))
    info = data.draw(camera_infos(size), "info")
    depth = data.draw(st.one_of(st.none(), images(ENCODINGS[5:8], ENCODINGS[:5] + ENCODINGS[8:], like=color)), "depth")
    camera = CameraConfig(width=data.draw(st.integers(1, 16), "width"), height=data.draw(st.integers(1, 16), "height"))
    item = SyncedInput(stamp=1.0, color=color, depth=depth, info=info)
    try:
        check_image(color, None, "colour image", max_pixels=4096)
    except InputRejected:
        pass
    try:
        frame = _timed(to_frame, item, np.eye(4), camera, 4096, 7, 20)
    except InputRejected as e:
        assert e.reason and str(e)
        _event(f"to_frame: {e.reason}")
        return
    _event("to_frame: Frame")
    h, w = camera.height, camera.width
    assert frame.rgb.shape == (h, w, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth is None or frame.depth.shape == (h, w)
    validate_camera(frame.K, (h, w), "frame", (h, w))  # what reaches the mapper is a usable camera
    assert frame.index == 7


def test_project_errors_are_the_only_escape():
    """CameraModelError is a DataError, so every reader's caller (run_cli) reports it in one line."""
    assert issubclass(CameraModelError, DataError) and issubclass(DataError, GnesfError)
