"""launch/mapping.launch.py against minimal stand-ins of launch/launch_ros (not on PyPI), and the
venv as the ament prefix `ros2 launch gnesf_ros mapping.launch.py` needs.

A description is evaluated the way launch visits it (test/launch_standins): declared arguments fill
the launch configurations (command-line values first), conditions are evaluated, opaque functions
return the actions they start. Checked: what the launch file asks ROS 2 to start (package,
executable, namespace, parameters, remappings), that the executable, params file and RViz view exist
in the installed prefix, and that ros2launch's file search finds the launch file there.
"""
import importlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
SHARE = VENV / "share" / "gnesf_ros"
MAPPER_KEYS = {"mapper.mode", "mapper.segmenter.backend", "mapper.segmenter.checkpoint"}


@pytest.fixture
def launch_module(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "test" / "launch_standins"))
    for mod in [m for m in sys.modules if m.split(".")[0] in ("launch", "launch_ros")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(VENV))
    spec = importlib.util.spec_from_file_location("mapping_launch", ROOT / "launch" / "mapping.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def launch_description(launch_module):
    return launch_module.generate_launch_description()


def _declared(ld) -> dict:
    return {e.name: e for e in ld.entities if type(e).__name__ == "DeclareLaunchArgument"}


def _started(ld, **args: str) -> list:
    """Visit ``ld`` like launch does with ``name:=value`` arguments; the Node actions it would start."""
    context = importlib.import_module("launch").LaunchContext()
    context.launch_configurations.update(args)

    def visit(entities) -> list:
        nodes = []
        for e in entities:
            if type(e).__name__ == "Node":
                if e.condition is None or e.condition.evaluate(context):
                    nodes.append(e)
            else:
                nodes += visit(e.visit(context) or [])
        return nodes

    return visit(ld.entities)


def _node(ld, package="gnesf_ros", **args: str):
    return next(n for n in _started(ld, **args) if n.package == package)


# --- the venv as an ament prefix (scripts/install_ament_prefix.sh) ------------------------------

def _ros2launch_find(share: Path, file_name: str) -> list[Path]:
    """ros2launch's get_share_file_path_from_package: plain os.walk (folder links not entered)."""
    return [Path(root) / name for root, _, files in os.walk(share) for name in files if name == file_name]


def test_ros2launch_finds_launch_file_and_config_in_venv_share(monkeypatch):
    from ament_index_python.packages import get_package_share_directory

    monkeypatch.setenv("AMENT_PREFIX_PATH", str(VENV))
    assert Path(get_package_share_directory("gnesf_ros")) == SHARE
    for sub in ("launch", "config", "models"):
        assert (SHARE / sub).is_dir() and not (SHARE / sub).is_symlink(), sub
    launch_files = _ros2launch_find(SHARE, "mapping.launch.py")
    assert launch_files == [SHARE / "launch" / "mapping.launch.py"], "(re-run scripts/install_ament_prefix.sh?)"
    assert launch_files[0].read_bytes() == (ROOT / "launch" / "mapping.launch.py").read_bytes()
    assert _ros2launch_find(SHARE, "mapping.yaml") == [SHARE / "config" / "mapping.yaml"]
    assert _ros2launch_find(SHARE, "gnesf.rviz") == [SHARE / "config" / "gnesf.rviz"]


def _fake_venv(tmp: Path, editable: bool) -> Path:
    """A prefix whose bin/python imports gnesf_ros from this checkout (editable) or from elsewhere."""
    venv = tmp / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    if editable:
        body = f'exec "{sys.executable}" "$@"\n'
    else:  # -S: no site-packages, so not the editable install; PYTHONPATH has a gnesf_ros elsewhere
        (tmp / "site" / "gnesf_ros").mkdir(parents=True, exist_ok=True)
        (tmp / "site" / "gnesf_ros" / "__init__.py").write_text("")
        body = f'PYTHONPATH="{tmp / "site"}" exec "{sys.executable}" -S "$@"\n'
    (venv / "bin" / "python").write_text("#!/bin/sh\n" + body)
    (venv / "bin" / "python").chmod(0o755)
    return venv


def _install(venv: Path) -> str:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "install_ament_prefix.sh"), str(venv)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _tree(share: Path) -> dict[str, str]:
    """relative path -> 'dir' | 'link:<target>' | 'file'."""
    out = {}
    for root, dirs, files in os.walk(share):
        for name in dirs + files:
            p = Path(root) / name
            out[str(p.relative_to(share))] = (f"link:{os.readlink(p)}" if p.is_symlink()
                                               else "dir" if p.is_dir() else "file")
    return out


def _expected_files() -> set[str]:
    keep = {"package.xml"}
    for sub in ("launch", "config", "models"):
        for root, dirs, files in os.walk(ROOT / sub):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            keep |= {str((Path(root) / f).relative_to(ROOT)) for f in files
                     if not f.startswith(".") and not f.endswith(".pyc") and f != "train_state.pt"
                     and not f.endswith(".state.pt")}
    return keep


def test_install_ament_prefix_mirrors_checkout_as_real_folders(tmp_path):
    """Link mode: real folders with per-file links (an older whole-folder link and stale entries
    are replaced, the checkout is untouched); copy mode: copies; both idempotent."""
    venv = _fake_venv(tmp_path, editable=True)
    share = venv / "share" / "gnesf_ros"
    share.mkdir(parents=True)
    (share / "launch").symlink_to(ROOT / "launch")  # what the old script made
    (share / "config" / "gone").mkdir(parents=True)
    (share / "config" / "gone" / "old.yaml").write_text("x")
    (share / "config" / "removed.yaml").symlink_to(tmp_path / "nowhere.yaml")
    (share / "models").write_text("not a folder")

    assert "(link mode)" in _install(venv)
    assert (ROOT / "launch" / "mapping.launch.py").is_file()  # the old link was not followed
    tree = _tree(share)
    files = {k for k, v in tree.items() if v != "dir"}
    assert files == _expected_files()
    assert all(tree[f] == f"link:{ROOT / f}" for f in files)
    assert _ros2launch_find(share, "mapping.launch.py") == [share / "launch" / "mapping.launch.py"]
    marker = venv / "share" / "ament_index" / "resource_index" / "packages" / "gnesf_ros"
    assert marker.is_file() and os.access(venv / "lib" / "gnesf_ros" / "mapping_node", os.X_OK)

    t0 = time.monotonic()
    _install(venv)
    assert time.monotonic() - t0 < 10 and _tree(share) == tree

    copy_venv = _fake_venv(tmp_path, editable=False)  # same prefix, now not editable
    assert "(copy mode)" in _install(copy_venv)
    copied = _tree(share)
    assert {k for k, v in copied.items() if v != "dir"} == files
    assert all(copied[f] == "file" and (share / f).read_bytes() == (ROOT / f).read_bytes() for f in files)
    (share / "config" / "mapping.yaml").write_text("edited")
    (share / "launch" / "stale.launch.py").write_text("")
    _install(copy_venv)
    assert _tree(share) == copied
    assert (share / "config" / "mapping.yaml").read_bytes() == (ROOT / "config" / "mapping.yaml").read_bytes()

    _install(_fake_venv(tmp_path, editable=True))
    assert _tree(share) == tree


# --- the launch description -------------------------------------------------------------------

def test_launch_declares_all_arguments(launch_module, launch_description):
    from gnesf_ros.pipeline import MODES
    from gnesf_ros.segmentation.base import BACKENDS

    args = _declared(launch_description)
    assert set(args) == {"params_file", "use_sim_time", "rviz", "camera_ns", "map_frame",
                         "mode", "segmenter", "checkpoint", "namespace"}
    for name in ("mode", "segmenter", "checkpoint", "namespace"):
        assert args[name].default_value == "", name
    assert all(m in args["mode"].description for m in MODES)
    assert set(launch_module.SEGMENTERS) == set(BACKENDS)
    assert all(b in args["segmenter"].description for b in BACKENDS)
    params_default = Path(args["params_file"].default_value)
    assert params_default == SHARE / "config" / "mapping.yaml" and params_default.is_file()
    doc = launch_module.__doc__
    assert all(f"{name}:=" in doc.split("Arguments")[0] and f"\n  {name} " in doc for name in args)


def test_launch_defaults_start_mapping_node_without_mapper_overrides(launch_description):
    nodes = _started(launch_description)
    assert [n.package for n in nodes] == ["gnesf_ros"]  # rviz:=false
    node = nodes[0]
    assert node.executable == "mapping_node" and node.name == "gnesf_mapping" and node.namespace is None
    params_file, overrides = node.parameters
    assert Path(params_file) == SHARE / "config" / "mapping.yaml"
    assert overrides == {"use_sim_time": False, "map_frame": "map"}  # mode/segmenter/checkpoint: the file's
    assert dict(node.remappings) == {"camera/color/image_raw": "camera/color/image_raw",
                                     "camera/color/camera_info": "camera/color/camera_info",
                                     "camera/depth/image_rect_raw": "camera/depth/image_rect_raw"}
    exe = VENV / "lib" / "gnesf_ros" / node.executable
    assert exe.is_file() and os.access(exe, os.X_OK)


def test_launch_arguments_override_mapper_parameters_and_namespace(launch_description):
    node = _node(launch_description, mode="baseline_average", segmenter="external", namespace="robot1",
                 use_sim_time="true", map_frame="odom", camera_ns="/cam")
    assert node.namespace == "robot1"
    overrides = node.parameters[1]
    assert overrides == {"use_sim_time": True, "map_frame": "odom", "mapper.mode": "baseline_average",
                         "mapper.segmenter.backend": "external"}
    assert dict(node.remappings)["camera/depth/image_rect_raw"] == "/cam/depth/image_rect_raw"
    node = _node(launch_description, checkpoint="/data/my_m2f")
    assert {k: v for k, v in node.parameters[1].items() if k in MAPPER_KEYS} == {
        "mapper.segmenter.checkpoint": "/data/my_m2f"}


@pytest.mark.parametrize("arg, value, expected", [
    ("mode", "fast", r"mode:='fast' is not a mapping mode; use one of rgb, rgbd, baseline_bayesian"),
    ("segmenter", "sam", r"segmenter:='sam' is not a segmenter backend; use one of mask2former, external"),
])
def test_launch_rejects_unknown_mode_and_segmenter(launch_description, arg, value, expected):
    with pytest.raises(RuntimeError, match=expected):
        _started(launch_description, **{arg: value})


def test_rviz_is_optional_and_uses_shipped_config(launch_description):
    rviz = _node(launch_description, package="rviz2", rviz="true")
    assert rviz.condition.predicate.name == "rviz" and rviz.remappings == []
    cfg = Path(rviz.arguments[1])
    assert cfg == SHARE / "config" / "gnesf.rviz" and cfg.is_file()
    topics = {d["Topic"]["Value"] for d in yaml.safe_load(cfg.read_text())["Visualization Manager"]["Displays"]
              if "Topic" in d}
    assert {"/gnesf/semantic_mesh", "/gnesf/occupancy", "/gnesf/label_image_color"} <= topics
    # with a namespace the node's topics move, and RViz follows them
    rviz = _node(launch_description, package="rviz2", rviz="true", namespace="robot1")
    assert dict(rviz.remappings) == {t: f"/robot1{t}" for t in topics}


def test_launch_configuration_runs_through_the_installed_executable(launch_description, tmp_path):
    """Start what the launch file describes for camera_ns:=cam2 namespace:=robot1
    mode:=baseline_average segmenter:=external the way launch_ros does (executable, __node/__ns,
    params file, parameter dict as a params file, remappings): the node must come up in /robot1,
    subscribe to the remapped topics and hold the overridden parameters."""
    import rclpy
    from rclpy.parameter_client import AsyncParameterClient

    sys.path.insert(0, str(ROOT / "test"))
    from ros_env import ros_domain, spawn, stop

    # a light mode + external segmenter: this test is about the launch wiring
    node = _node(launch_description, camera_ns="cam2", namespace="robot1", mode="baseline_average",
                 segmenter="external")
    params_file, overrides = node.parameters
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"/**": {"ros__parameters": overrides}}))
    cmd = [str(VENV / "lib" / "gnesf_ros" / node.executable), "--ros-args", "-r", f"__node:={node.name}",
           "-r", f"__ns:=/{node.namespace}", "--params-file", params_file, "--params-file", str(overlay)]
    for src, dst in node.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    expected = {"/robot1/cam2/color/image_raw", "/robot1/cam2/color/camera_info", "/robot1/cam2/depth/image_rect_raw"}
    values = None
    with ros_domain() as env:
        rclpy.init()
        proc = spawn(cmd, env)
        try:
            probe = rclpy.create_node("gnesf_launch_probe")
            deadline = time.monotonic() + 40
            topics: set[str] = set()
            while time.monotonic() < deadline and not expected <= topics:
                time.sleep(0.2)
                try:
                    topics = {t for t, _ in probe.get_subscriber_names_and_types_by_node(node.name, "/robot1")}
                except Exception:  # noqa: BLE001 - node not discovered yet
                    pass
                assert proc.poll() is None, proc.communicate()
            params = AsyncParameterClient(probe, f"/robot1/{node.name}")
            if params.wait_for_services(20.0):
                future = params.get_parameters(["mapper.mode", "mapper.segmenter.backend", "map_frame"])
                rclpy.spin_until_future_complete(probe, future, timeout_sec=20.0)
                if future.done():
                    values = [v.string_value for v in future.result().values]
            probe.destroy_node()
        finally:
            out, err = stop(proc)
            rclpy.shutdown()
    assert expected <= topics, err[-2000:]
    assert values == ["baseline_average", "external", "map"], err[-2000:]
