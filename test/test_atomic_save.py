"""Atomic persistence (gnesf_ros.atomic): a map, mesh, metrics file or checkpoint is the previous
version or the new one after any failure or SIGKILL, never 0 bytes or half written; a map that
cannot be loaded is a DataError naming the file and the reason; output paths that cannot be
written are refused at start."""
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gnesf_ros.atomic import atomic_dir, atomic_path, is_temp_name, write_json, write_text
from gnesf_ros.config import MapConfig
from gnesf_ros.errors import DataError
from gnesf_ros.mapping import SemanticVoxelMap
from gnesf_ros.mapping.io import load_map, save_map, save_mesh_ply
from mapping_scene import one_hot, orbit_frames

ROOT = Path(__file__).resolve().parents[1]
C = 20


def integrated(n_frames: int, size=(48, 64)) -> SemanticVoxelMap:
    m = SemanticVoxelMap(MapConfig())
    for f in orbit_frames(n_frames, size):
        m.integrate_depth(f, one_hot(f.labels, C))
    return m


def signature(m: SemanticVoxelMap) -> str:
    st = m.store
    keys = st.active_keys()
    slots = st.find(keys)
    h = hashlib.sha256(keys.tobytes())
    for name in ("sdf", "weight", "classes", "sem_weight", "stamp"):
        h.update(getattr(st, name)[slots].tobytes())
    h.update(json.dumps([m.counters, m.tick], sort_keys=True).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps")
    a, b = integrated(3), integrated(6)
    return save_map(a, root / "a.npz"), save_map(b, root / "b.npz"), signature(a), signature(b)


def others(folder: Path, keep: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n != keep)


# ------------------------------------------------------------------------------- helpers
def test_atomic_writes_replace_or_keep_the_old_file(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    write_json(target, {"run": 1})
    write_text(target, '{"run": 2}')
    assert json.loads(target.read_text()) == {"run": 2}
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"run": 3, "trunc')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"run": 2}
    assert others(target.parent, "metrics.json") == []  # the temporary file is gone
    stale, fresh = tmp_path / "sub" / ".metrics.json.tmp-0badc0de.json", tmp_path / "sub" / ".metrics.json.tmp-1.json"
    stale.write_text("{")  # left by a killed writer an hour ago
    fresh.write_text("{")  # another writer at work
    os.utime(stale, (time.time() - 3600,) * 2)
    write_json(target, {"run": 2})
    assert others(target.parent, "metrics.json") == [fresh.name]
    fresh.unlink()
    with atomic_path(tmp_path / "img.png") as tmp:  # the suffix is kept for format-by-name writers
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and is_temp_name(tmp.name)
        tmp.write_bytes(b"x")
    assert (tmp_path / "img.png").read_bytes() == b"x"
    (tmp_path / "afile").write_text("")
    with pytest.raises(DataError, match="afile is a file"):
        write_text(tmp_path / "afile" / "x.json", "{}")


def test_atomic_dir_swaps_a_whole_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"old")
        (tmp / "config.json").write_text("{}")
    (target / "MODEL_CARD.md").write_text("card")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, keep_others=True) as tmp:
            (tmp / "weights.bin").write_bytes(b"half")
            raise RuntimeError("killed")
    assert (target / "weights.bin").read_bytes() == b"old" and others(tmp_path, "model") == []
    with atomic_dir(target, keep_others=True) as tmp:
        (tmp / "weights.bin").write_bytes(b"new")
    assert sorted(os.listdir(target)) == ["MODEL_CARD.md", "config.json", "weights.bin"]
    assert (target / "weights.bin").read_bytes() == b"new" and others(tmp_path, "model") == []
    with atomic_dir(target) as tmp:
        (tmp / "only.bin").write_bytes(b"1")
    assert os.listdir(target) == ["only.bin"]


def test_save_map_failure_keeps_the_previous_map(tmp_path, maps, monkeypatch):
    a_path, _, sig_a, _ = maps
    target = tmp_path / "map.npz"
    target.write_bytes(a_path.read_bytes())
    m = integrated(2)

    def broken_savez(f, **arrays):  # writes part of the file, then fails (disk full, kill, ...)
        f.write(b"PK\x03\x04" + b"\0" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        save_map(m, target)
    monkeypatch.undo()
    assert signature(load_map(target)) == sig_a
    assert others(tmp_path, "map.npz") == []
    mesh = save_mesh_ply(m, tmp_path / "mesh.ply")
    assert others(tmp_path, "map.npz") == ["mesh.ply"] and mesh.stat().st_size > 0


# ------------------------------------------------------------------------------- broken maps
def _rewrite(src: Path, dst: Path, **change) -> Path:
    with np.load(src) as z:
        data = {k: z[k] for k in z.files}
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    with open(dst, "wb") as f:
        np.savez(f, **data)
    return dst


@pytest.mark.parametrize("case, reason", [
    ("empty", "empty file"),
    ("truncated", "truncated"),
    ("half", "truncated"),
    ("not_zip", "not an npz"),
    ("missing_keys", "missing array keys"),
    ("missing_sdf_weight", "missing arrays sdf, weight"),
    ("class_names_19", "19 classes"),
    ("classes_19", "block array 'classes' has shape"),
    ("rows_mismatch", "block array 'sdf' has shape"),
    ("meta_garbage", "unreadable metadata"),
    ("meta_no_config", "lacks config"),
])
def test_a_broken_map_is_a_data_error_naming_file_and_reason(tmp_path, maps, case, reason):
    a_path = maps[0]
    raw = a_path.read_bytes()
    path = tmp_path / "map.npz"  # (the reason, not the file name, must match)
    with np.load(a_path) as z:
        meta = json.loads(str(z["meta"]))
        names, classes, sdf = z["class_names"], z["classes"], z["sdf"]
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(raw[:len(raw) - 100])
    elif case == "half":
        path.write_bytes(raw[:len(raw) // 2])
    elif case == "not_zip":
        path.write_bytes(b"P6\n# not a map\n" + b"\0" * 100)
    elif case == "missing_keys":
        _rewrite(a_path, path, keys=None)
    elif case == "missing_sdf_weight":
        _rewrite(a_path, path, sdf=None, weight=None)
    elif case == "class_names_19":
        _rewrite(a_path, path, class_names=names[:19])
    elif case == "classes_19":
        _rewrite(a_path, path, classes=classes[..., :19])
    elif case == "rows_mismatch":
        _rewrite(a_path, path, sdf=sdf[:-1])
    elif case == "meta_garbage":
        _rewrite(a_path, path, meta=np.array("{not json"))
    elif case == "meta_no_config":
        del meta["config"]
        _rewrite(a_path, path, meta=np.array(json.dumps(meta)))
    with pytest.raises(DataError, match=reason) as err:
        SemanticVoxelMap.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------- kill test
# A fresh interpreter (imports take seconds) forks one saver per round; the test SIGKILLs the
# saver at a random moment of its save loop (two maps saved alternately onto one path).
ZYGOTE = r"""
import os, sys
from gnesf_ros.mapping.io import load_map, save_map
a, b = load_map(sys.argv[1]), load_map(sys.argv[2])
target, progress = sys.argv[3], sys.argv[4]
print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        fd = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        i = int(line)  # the round: rounds start with either map
        while True:
            save_map((a, b)[i % 2], target)
            os.write(fd, b"x")  # one complete save
            i += 1
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def test_sigkill_during_map_saves_leaves_a_loadable_map(tmp_path, maps):
    a_path, b_path, sig_a, sig_b = maps
    live = tmp_path / "live"
    live.mkdir()
    target, progress = live / "map.npz", tmp_path / "progress"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(a_path), str(b_path), str(target), str(progress)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    rng = random.Random(13)
    t0 = time.monotonic()
    seen = set()
    existed = False
    try:
        assert proc.stdout.readline().strip() == "ready"
        for k in range(15):
            proc.stdin.write(f"{k}\n")
            proc.stdin.flush()
            pid = int(proc.stdout.readline())
            time.sleep(0.002 if k == 0 else rng.uniform(0.0, 0.4))
            os.kill(pid, signal.SIGKILL)
            assert proc.stdout.readline().strip() == "reaped"
            names = [n for n in os.listdir(live) if n != "map.npz"]
            assert all(is_temp_name(n) and not n.endswith("map.npz") for n in names), names
            assert [n for n in os.listdir(live) if not n.startswith(".")] in ([], ["map.npz"])
            if not target.exists():
                # only before the first complete save
                assert not existed and (not progress.exists() or progress.stat().st_size == 0), k
                continue
            existed = True
            assert target.stat().st_size > 0
            sig = signature(load_map(target))
            assert sig in (sig_a, sig_b), k
            seen.add(sig)
    finally:
        proc.kill()
        proc.wait()
    assert existed and progress.stat().st_size > 0 and seen  # (which maps were seen depends on timing)
    assert time.monotonic() - t0 < 30


# ------------------------------------------------------------------------------- train --out
def _one_line_error(capsys, rc, t0, needle):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert time.monotonic() - t0 < 5, "the --out check must come before any work"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("under", [False, True])
def test_train_gnesf_out_that_cannot_be_written_fails_at_start(tmp_path, capsys, under):
    from gnesf_ros.cli.train import main

    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "w.pt" if under else tmp_path
    t0 = time.monotonic()
    rc = main(["gnesf", "--out", str(out), "--steps", "2", "--scenes", "boxes", "--threads", "1"])
    _one_line_error(capsys, rc, t0, "--out")
    assert os.listdir(tmp_path) == ["afile"]


def test_train_segmenter_out_under_a_file_fails_at_start(tmp_path, capsys):
    from gnesf_ros.cli.train import main

    (tmp_path / "afile").write_text("x")
    t0 = time.monotonic()
    rc = main(["segmenter", "--out", str(tmp_path / "afile" / "seg"), "--steps", "1", "--eval-scenes", "0",
               "--views", str(tmp_path / "no_views")])
    _one_line_error(capsys, rc, t0, "--out")
    rc = main(["segmenter-views", "--out", str(tmp_path / "afile"), "--scenes", "1", "--views", "1"])
    _one_line_error(capsys, rc, t0, "--out")


# ------------------------------------------------------------------------------- node start-up
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_node_refuses_a_broken_map_and_does_not_overwrite_it(tmp_path, content):
    """load_map_path naming a broken map: configure fails with one fatal line naming the parameter
    and the reason; the save at exit (save_map_path = the same file) does not overwrite it."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn as R
    from rclpy.parameter import Parameter

    from ros_env import ros_domain

    from gnesf_ros.ros.node import MappingNode

    path = tmp_path / "map.npz"
    path.write_bytes(content)
    overrides = [Parameter("use_lifecycle", value=True), Parameter("mapper.mode", value="baseline_average"),
                 Parameter("mapper.segmenter.backend", value="external"),
                 Parameter("load_map_path", value=str(path)), Parameter("save_map_path", value=str(path))]
    with ros_domain():
        rclpy.init()
        try:
            node = MappingNode(parameter_overrides=overrides)
            fatal = []
            logger = node.get_logger()
            real_fatal = logger.fatal
            logger.fatal = lambda msg, **kw: (fatal.append(msg), real_fatal(msg, **kw))[1]
            assert node.trigger_configure() == R.FAILURE
            assert node.mapper is None
            assert len(fatal) == 1 and fatal[0].startswith("cannot configure: parameter load_map_path = ")
            assert str(path) in fatal[0] and ("empty file" in fatal[0] or "truncated" in fatal[0]), fatal
            node.save_on_exit()
            node.destroy_node()
        finally:
            rclpy.shutdown()
    assert path.read_bytes() == content
    assert os.listdir(tmp_path) == ["map.npz"]
