"""One error boundary for every CLI and for node start-up (issue 13, "Tracebacks for user error").

An error caused by input or arguments is one stderr line naming the input and what is wrong, with a
non-zero exit and no traceback; a genuine internal error keeps its traceback and adds a line saying so.
"""
from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ros_env import ros_domain  # noqa: E402

from gnesf_ros.cli import common  # noqa: E402
from gnesf_ros.config import ConfigError, MapperConfig, default_yaml, load_config  # noqa: E402

# Logging lines of the CLIs ("INFO gnesf_ros...: ...") and of rcl/rclpy ("[ERROR] [<time>] [rcl]: ...") are
# not the error line (rcl logs its own parse failure before rclpy.init raises).
_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING) \S+: |^\[(DEBUG|INFO|WARN|ERROR|FATAL)\] \[[\d.]+\] \[")


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip() and not _LOG_LINE.match(ln)]


def _call(main, argv: list[str], capsys) -> tuple[int, str]:
    """Run a CLI's main in-process: (exit code, stderr). argparse refusals exit via SystemExit."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def _assert_one_line(rc, err: str, *names: str) -> str:
    lines = _error_lines(err)
    assert rc not in (0, None), err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny synthetic scene, its GT mesh, a plain file, and bad YAML configs."""
    from gnesf_ros.data.synthetic import generate_scene

    root = tmp_path_factory.mktemp("cli_errors")
    scene = generate_scene(root / "scenes", 3, frames=3, size=(48, 64))
    (root / "afile").write_text("not a folder\n")
    (root / "width0.yaml").write_text("camera:\n  width: 0\n")
    (root / "latin1.yaml").write_bytes(b"# caf\xe9\ncamera:\n  width: 320\n")
    (root / "broken_params.yaml").write_text("gnesf_mapping:\n  ros__parameters: [unclosed\n")
    return {"root": root, "scene": scene, "gt": next(scene.glob("*_vh_clean_2.labels.ply")),
            "file": root / "afile"}


def _main(module: str):
    return __import__(f"gnesf_ros.cli.{module}", fromlist=["main"]).main


# (cli module, argv builder, names the one line must contain)
CASES = {
    "eval --json under a file": ("evaluate", lambda f: ["--pred", f["gt"], "--gt", f["gt"], "--json", f["file"] / "m.json"],
                                 ("--json", "afile")),
    "eval --json a folder": ("evaluate", lambda f: ["--pred", f["gt"], "--gt", f["gt"], "--json", f["root"]],
                             ("--json", "folder")),
    "eval --threshold nan": ("evaluate", lambda f: ["--pred", f["gt"], "--gt", f["gt"], "--threshold", "nan"],
                             ("--threshold", "nan")),
    "view sheet --out a folder": ("view", lambda f: ["sheet", f["scene"], "--out", f["root"], "--frames", "2"],
                                  ("--out",)),
    "view sheet --out without image extension": ("view", lambda f: ["sheet", f["scene"], "--out", f["root"] / "sheet",
                                                                    "--frames", "2"], ("--out", "sheet", ".png")),
    "view sheet --out under a file": ("view", lambda f: ["sheet", f["scene"], "--out", f["file"] / "s.png",
                                                         "--frames", "2"], ("--out", "afile")),
    "view mesh --out under a file": ("view", lambda f: ["mesh", f["gt"], "--out", f["file"] / "m.png"],
                                     ("--out", "afile")),
    "view mesh --out .txt": ("view", lambda f: ["mesh", f["gt"], "--out", f["root"] / "m.txt"], ("--out", "m.txt")),
    "synth --out a file": ("synth", lambda f: ["--seed", "2", "--frames", "2", "--size", "64x48", "--out", f["file"]],
                           ("--out", "afile")),
    "synth --out under a file": ("synth", lambda f: ["--seed", "2", "--frames", "2", "--size", "64x48",
                                                     "--out", f["file"] / "sub"], ("--out", "afile")),
    "train --save-every 0": ("train", lambda f: ["segmenter", "--save-every", "0", "--steps", "1", "--eval-scenes", "0",
                                                 "--size", "64x48", "--out", f["root"] / "seg1"], ("--save-every",)),
    "train --lr nan": ("train", lambda f: ["segmenter", "--lr", "nan", "--steps", "1", "--eval-scenes", "0",
                                           "--size", "64x48", "--out", f["root"] / "seg2"], ("--lr", "nan")),
    "train --device bogus": ("train", lambda f: ["segmenter", "--device", "bogus", "--steps", "1", "--eval-scenes", "0",
                                                 "--size", "64x48", "--out", f["root"] / "seg3"], ("--device", "bogus")),
    "bag play --clock-hz 0": ("bag", lambda f: ["play", f["root"] / "nobag", "--clock-hz", "0"], ("--clock-hz",)),
    "bag convert --stride 0": ("bag", lambda f: ["convert", f["scene"], f["root"] / "bag", "--stride", "0"],
                               ("--stride",)),
    "map --stride 0": ("map", lambda f: [f["scene"], "--out", f["root"] / "m1", "--stride", "0",
                                         "--mode", "baseline_average", "--segmenter", "oracle"], ("--stride",)),
    "map config camera.width 0": ("map", lambda f: [f["scene"], "--out", f["root"] / "m2", "--config",
                                                    f["root"] / "width0.yaml", "--mode", "baseline_average",
                                                    "--segmenter", "oracle"], ("camera.width",)),
    "map config not UTF-8": ("map", lambda f: [f["scene"], "--out", f["root"] / "m3", "--config",
                                               f["root"] / "latin1.yaml", "--mode", "baseline_average",
                                               "--segmenter", "oracle"], ("latin1.yaml", "UTF-8")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line(case, files, capsys):
    module, argv, names = CASES[case]
    rc, err = _call(_main(module), argv(files), capsys)
    line = _assert_one_line(rc, err, *names)
    assert rc == 2 and ": error: " in line, (rc, line)


def test_internal_error_keeps_traceback_and_says_so(files, capsys, monkeypatch):
    from gnesf_ros.cli import evaluate

    def boom(args):
        return 1 // 0

    monkeypatch.setattr(evaluate, "_main", boom)
    rc, err = _call(evaluate.main, ["--pred", files["gt"], "--gt", files["gt"]], capsys)
    assert rc == 1, err
    assert "Traceback" in err and "in boom" in err, err
    assert _error_lines(err)[-1] == ("gnesf-eval: internal error (a bug, please report it): "
                                     "ZeroDivisionError: integer division or modulo by zero"), err


def test_os_errors_name_the_file(capsys, tmp_path):
    """OSError of any kind on a user path (not only FileNotFoundError/PermissionError) is one line."""
    for exc in (NotADirectoryError(20, "Not a directory", str(tmp_path / "f" / "x")),
                FileExistsError(17, "File exists", str(tmp_path / "f")),
                UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")):
        parser = argparse.ArgumentParser(prog="gnesf-test")

        def body(args, exc=exc):
            raise exc

        rc = common.run_cli(body, parser, [])
        line = _assert_one_line(rc, capsys.readouterr().err)
        assert rc == 2 and line.startswith("gnesf-test: error: ")
        if isinstance(exc, OSError):
            assert exc.filename in line and exc.strerror in line


def test_argument_validators(tmp_path):
    bad = argparse.ArgumentTypeError
    assert common.positive_int("3") == 3 and common.nonnegative_int("0") == 0
    assert common.positive_float("0.5") == 0.5 and common.finite_float("-2") == -2.0
    for parse, text in [(common.positive_int, "0"), (common.positive_int, "-1"), (common.positive_int, "1.5"),
                        (common.nonnegative_int, "-1"), (common.positive_float, "0"), (common.positive_float, "nan"),
                        (common.positive_float, "inf"), (common.finite_float, "-inf"), (common.nonnegative_float, "-1e-9"),
                        (common.device_arg, "bogus"), (common.device_arg, "cuda:x")]:
        with pytest.raises(bad):
            parse(text)
    assert common.device_arg("cpu") == "cpu" and common.device_arg("cuda:1") == "cuda:1"
    f = tmp_path / "file"
    f.write_text("x")
    assert common.out_dir_arg(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"
    assert common.out_dir_arg(str(tmp_path)) == tmp_path
    for text in (str(f), str(f / "sub"), str(f / "a" / "b")):
        with pytest.raises(bad, match="file"):
            common.out_dir_arg(text)
    assert common.out_file_arg(str(tmp_path / "new" / "m.json")) == tmp_path / "new" / "m.json"
    for text in (str(tmp_path), str(f / "m.json"), str(tmp_path / "new") + "/"):
        with pytest.raises(bad):
            common.out_file_arg(text)
    assert common.image_out_arg(str(tmp_path / "a.PNG")).name == "a.PNG"
    for text in (str(tmp_path / "a"), str(tmp_path / "a.txt"), str(tmp_path), str(f / "a.png")):
        with pytest.raises(bad):
            common.image_out_arg(text)


@pytest.mark.parametrize("overlay, key", [
    ({"camera": {"width": 0}}, "camera.width"),
    ({"camera": {"height": -5}}, "camera.height"),
    ({"camera": {"max_depth_m": math.nan}}, "camera.max_depth_m"),
    ({"keyframe": {"fragment_size": 0}}, "keyframe.fragment_size"),
    ({"keyframe": {"fragment_overlap": 9}}, "keyframe.fragment_overlap"),
    ({"segmenter": {"batch_size": 0}}, "segmenter.batch_size"),
    ({"segmenter": {"device": "bogus"}}, "segmenter.device"),
    ({"model": {"voxel_size_m": 0.0}}, "model.voxel_size_m"),
    ({"model": {"feat_channels": [32, 24]}}, "model.feat_channels"),
    ({"model": {"occ_band_vox": [3.0, 2.0, -1.0]}}, "model.occ_band_vox[2]"),
    ({"model": {"render_far_m": 0.05}}, "model.render_far_m"),
    ({"map": {"max_blocks": 0}}, "map.max_blocks"),
    ({"map": {"max_weight": math.inf}}, "map.max_weight"),
    ({"map": {"bayes_measurement_prob": 1.0}}, "map.bayes_measurement_prob"),
    ({"map": {"alloc_pixel_stride": 0}}, "map.alloc_pixel_stride"),
])
def test_impossible_config_values_name_the_key(overlay, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        load_config(None, overlay)


def test_config_defaults_are_valid_and_default_yaml_loads(tmp_path):
    from gnesf_ros.config import validate_config

    validate_config(MapperConfig())
    (tmp_path / "d.yaml").write_text(default_yaml())
    load_config(tmp_path / "d.yaml")  # every default passes the rules (test_pipeline checks the values)


def test_non_utf8_yaml_names_the_file(files):
    with pytest.raises(ConfigError, match=r"latin1\.yaml is not UTF-8 text"):
        load_config(files["root"] / "latin1.yaml")


def _node(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gnesf_ros.ros.node", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_node_start_with_a_missing_or_broken_params_file_is_one_line(files):
    with ros_domain() as env:
        missing = files["root"] / "missing_params.yaml"
        proc = _node(env, "--ros-args", "--params-file", str(missing))
        line = _assert_one_line(proc.returncode, proc.stderr, "--params-file", str(missing))
        assert proc.returncode == 2 and line.startswith("gnesf-node: error: "), line
        broken = files["root"] / "broken_params.yaml"
        proc = _node(env, "--ros-args", "--params-file", str(broken))
        line = _assert_one_line(proc.returncode, proc.stderr, str(broken))
        assert proc.returncode == 2 and line.startswith("gnesf-node: error: "), line


@pytest.mark.parametrize("exc, rc, expected", [
    (ConfigError("parameter 'queue_size': must be >= 1"), 2, "gnesf-node: error: parameter 'queue_size'"),
    (FileNotFoundError(2, "No such file or directory", "maps/old.npz"), 2, "gnesf-node: error: maps/old.npz"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2, "gnesf-node: error: "),
    (ZeroDivisionError("division by zero"), 1,
     "gnesf-node: internal error (a bug, please report it): ZeroDivisionError: division by zero"),
])
def test_node_start_up_boundary(exc, rc, expected, monkeypatch, capsys):
    """Errors raised while the node is built: a person's is one line (exit 2), a bug keeps its traceback."""
    from gnesf_ros.ros import node as node_mod

    def failing_node(*args, **kwargs):
        raise exc

    monkeypatch.setattr(node_mod.rclpy, "init", lambda *a, **k: None)
    monkeypatch.setattr(node_mod.rclpy, "try_shutdown", lambda *a, **k: None)
    monkeypatch.setattr(node_mod, "MappingNode", failing_node)
    capsys.readouterr()
    assert node_mod.main(["gnesf-node"]) == rc
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert lines[-1].startswith(expected), err
    if rc == 2:
        assert len(lines) == 1 and "Traceback" not in err, err
    else:
        assert "Traceback" in err and "in failing_node" in err, err


def test_a_non_utf8_label_tsv_is_named(tmp_path):
    from gnesf_ros.data.labelmap import load_label_map
    from gnesf_ros.errors import DataError

    tsv = tmp_path / "scannetv2-labels.combined.tsv"
    tsv.write_bytes(b"id\tnyu40id\n1\t\xff\xfe\n")
    with pytest.raises(DataError, match="scannetv2-labels.combined.tsv: not UTF-8"):
        load_label_map(tsv)


@pytest.mark.parametrize("argv, arg", [(["play", "b", "--rate", "0"], "--rate"),
                                       (["play", "b", "--delay", "nan"], "--delay"),
                                       (["play", "b", "--wait-for-subscribers", "-1"], "--wait-for-subscribers"),
                                       (["convert", "a", "b", "--max-frames", "0"], "--max-frames"),
                                       (["convert", "a", "b", "--rate-hz", "inf"], "--rate-hz")])
def test_bag_numbers_are_checked_as_arguments(argv, arg, capsys):
    from gnesf_ros.cli.bag import main as bag_main

    with pytest.raises(SystemExit) as e:  # argparse's exit, with run_cli's one-line message
        bag_main(argv)
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and f"argument {arg}" in err[0], err
