"""The node as ROS 2 tools drive it, from another process over real DDS: parameter services (what
``ros2 param`` uses), lifecycle services (what a lifecycle manager uses), start-up errors of a
params file, and a replay on sim time whose /clock stops (the end of a bag).
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_harness import Probe, start_node, stop_node, synthetic_frames  # noqa: E402
from ros_env import ros_domain, spawn  # noqa: E402
from test_node_params import seed_map  # noqa: E402

import rclpy  # noqa: E402

from gnesf_ros.config import KeyframeConfig  # noqa: E402
from gnesf_ros.geometry.keyframes import KeyframeSelector  # noqa: E402
from gnesf_ros.ros.parameters import NODE_NAME, parameter_table  # noqa: E402

LIGHT = {"mapper.mode": "baseline_average", "mapper.segmenter.backend": "external"}
SIZE = (60, 80)


class _Client:
    """A node of this process spinning on its own thread, for service calls to the mapping node."""

    def __init__(self, name: str = "gnesf_tooling_client"):
        from rclpy.executors import SingleThreadedExecutor

        self.node = rclpy.create_node(name)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def result(self, future, timeout: float = 20.0, what: str = "a reply"):
        deadline = time.monotonic() + timeout
        while not future.done():
            assert time.monotonic() < deadline, f"no {what} within {timeout} s"
            time.sleep(0.02)
        return future.result()

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        return self.result(client.call_async(request), timeout, f"reply of {name}")

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=1.0)
        self._thread.join(timeout=2.0)
        self.node.destroy_node()


def test_lifecycle_and_parameters_from_another_process(tmp_path):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from std_srvs.srv import Trigger

    map_path, blocks = seed_map(tmp_path)
    node_name = f"/{NODE_NAME}"
    with ros_domain() as env:
        rclpy.init()
        proc = client = None
        try:
            proc = start_node(env, {"use_lifecycle": True, "load_map_path": str(map_path), **LIGHT,
                                    "save_map_path": str(tmp_path / "saved.npz")}, tmp_path)
            client = _Client()

            def state() -> int:
                return client.call(GetState, f"{node_name}/get_state", GetState.Request()).current_state.id

            def change(transition: int) -> bool:
                req = ChangeState.Request()
                req.transition.id = transition
                return client.call(ChangeState, f"{node_name}/change_state", req).success

            assert state() == State.PRIMARY_STATE_UNCONFIGURED
            # wrong state: the lifecycle refuses, the node keeps its state
            assert not change(Transition.TRANSITION_ACTIVATE)
            assert state() == State.PRIMARY_STATE_UNCONFIGURED

            params = AsyncParameterClient(client.node, NODE_NAME)
            assert params.wait_for_services(30.0)
            names = set(client.result(params.list_parameters()).result.names)
            assert {p.name for p in parameter_table()} <= names
            desc = client.result(params.describe_parameters(["queue_size", "mapper.map.voxel_size_m"])).descriptors
            assert desc[0].description and desc[0].integer_range[0].from_value == 1
            assert desc[1].description and desc[1].floating_point_range
            values = client.result(params.get_parameters(["mapper.mode", "queue_size"])).values
            assert values[0].string_value == "baseline_average" and values[1].integer_value == 10
            # unconfigured: a change is taken (read at configure) ...
            ok = client.result(params.set_parameters([Parameter("queue_size", value=7)])).results[0]
            assert ok.successful, ok.reason
            out_of_range = client.result(params.set_parameters([Parameter("queue_size", value=0)])).results[0]
            assert not out_of_range.successful

            assert change(Transition.TRANSITION_CONFIGURE) and state() == State.PRIMARY_STATE_INACTIVE
            # ... configured: refused with the reason, never silently ignored
            refused = client.result(params.set_parameters([Parameter("queue_size", value=8)])).results[0]
            assert not refused.successful and "configure" in refused.reason
            assert client.result(params.get_parameters(["queue_size"])).values[0].integer_value == 7

            assert change(Transition.TRANSITION_ACTIVATE) and state() == State.PRIMARY_STATE_ACTIVE
            assert change(Transition.TRANSITION_DEACTIVATE) and state() == State.PRIMARY_STATE_INACTIVE
            assert change(Transition.TRANSITION_ACTIVATE) and state() == State.PRIMARY_STATE_ACTIVE
            saved = client.call(Trigger, "/gnesf/save_map", Trigger.Request())
            assert saved.success and f"saved {blocks} blocks" in saved.message  # map kept across the pause
            assert change(Transition.TRANSITION_DEACTIVATE) and change(Transition.TRANSITION_CLEANUP)
            assert state() == State.PRIMARY_STATE_UNCONFIGURED
            assert change(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
            assert state() == State.PRIMARY_STATE_FINALIZED
        finally:
            if client is not None:
                client.close()
            out = stop_node(proc) if proc is not None else ""
            rclpy.shutdown()
    assert "Traceback" not in out, out[-3000:]


@pytest.mark.parametrize("overlay, key", [({"mapper.map.voxel_size": 0.05}, "mapper.map.voxel_size"),
                                          ({"queue_size": "ten"}, "queue_size"),
                                          ({"queue_size": 0}, "queue_size")])
def test_a_bad_params_file_is_one_line_and_no_start(tmp_path, overlay, key):
    with ros_domain() as env:
        proc = start_node(env, {**LIGHT, **overlay}, tmp_path)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            out = stop_node(proc)
            pytest.fail(f"the node started with a bad params file: {out[-2000:]}")
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert proc.returncode == 2, out
    assert "Traceback" not in out and len(lines) == 1 and f"'{key}'" in lines[0], out
    if key == "mapper.map.voxel_size":
        assert "mapper.map.voxel_size_m" in lines[0]  # the near miss is suggested


def test_node_help_prints_usage_without_starting():
    with ros_domain() as env:
        proc = spawn([sys.executable, "-m", "gnesf_ros.ros.node", "--help"], env)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.startswith("usage: gnesf-node") and not err.strip(), (out, err)


def _keyframe_stamps(frames, stamps) -> list[float]:
    sel = KeyframeSelector(KeyframeConfig(min_translation_m=0.05, min_rotation_deg=10.0))
    return [s for f, s in zip(frames, stamps) if sel.accept(f.T_world_cam)]


@pytest.mark.parametrize("sim_time", [True, False])
def test_replay_end_flushes_and_outputs_are_stamped_with_data_time(tmp_path, sim_time):
    """Frames with /clock (sim time) or without (wall clock node, recorded stamps): after the last
    frame /clock stops; the idle flush (steady clock) still maps the unfinished window, /diagnostics
    keeps coming, and every map output carries the stamp of the newest keyframe in it (data time,
    never the node's clock). Before any frame the latched mesh is one DELETEALL (no empty ADD)."""
    from rosgraph_msgs.msg import Clock
    from visualization_msgs.msg import Marker

    frames, _ = synthetic_frames(2003, 14, 8, SIZE)
    t0 = 1000.0  # far from wall time: a wall-clock stamp would show
    stamps = [t0 + 0.2 * i for i in range(len(frames))]
    keyframes = _keyframe_stamps(frames, stamps)
    assert len(keyframes) % 4, "the last window must be unfinished for this test"
    overrides = {**LIGHT, "use_sim_time": sim_time, "mapper.camera.height": SIZE[0], "mapper.camera.width": SIZE[1],
                 "mapper.keyframe.fragment_size": 4, "mapper.keyframe.min_translation_m": 0.05,
                 "mapper.keyframe.min_rotation_deg": 10.0, "input_qos": "reliable", "input_qos_depth": 100,
                 "idle_flush_s": 1.0, "diagnostics_rate_hz": 10.0, "publish_rate_hz": 0.0}
    with ros_domain() as env:
        rclpy.init()
        proc = probe = None
        try:
            proc = start_node(env, overrides, tmp_path)
            probe = Probe(renders=False)
            clock = probe.node.create_publisher(Clock, "/clock", 10)
            probe.publisher.wait_for_subscribers(60)
            probe.wait(lambda: probe.mesh is not None, 20, "the latched mesh of the empty map")
            with probe.lock:
                first = probe.mesh
            assert [(m.action, len(m.points)) for m in first.markers] == [(Marker.DELETEALL, 0)]
            for f, stamp in zip(frames, stamps):
                if sim_time:
                    clock.publish(Clock(clock=rclpy.time.Time(seconds=stamp).to_msg()))
                probe.publisher.publish(stamp, f.rgb, f.depth, f.labels, f.K, f.T_world_cam)
                time.sleep(0.05)
            # /clock stops here, like a bag that ended
            probe.wait(lambda: probe.value("keyframes_mapped") >= len(keyframes) and probe.value("flushes") >= 1
                       and probe.value("pending_keyframes", 1) == 0, 30,
                       f"all {len(keyframes)} keyframes mapped, the last window by the idle flush")
            assert probe.value("keyframes_selected") == len(keyframes)
            probe.wait(lambda: probe.mesh is not None and probe.mesh.markers
                       and probe.mesh.markers[0].action == Marker.ADD
                       and abs(_stamp(probe.mesh) - keyframes[-1]) < 1e-6, 10,
                       f"the final mesh, stamped with the last keyframe {keyframes[-1]}")
            count = probe.diag_count
            time.sleep(1.5)
            assert probe.diag_count >= count + 5, "/diagnostics stopped with /clock"
            with probe.lock:
                grid_stamp = _stamp(probe.occupancy)
            assert any(abs(grid_stamp - k) < 1e-6 for k in keyframes), grid_stamp
        finally:
            if probe is not None:
                probe.close()
            out = stop_node(proc) if proc is not None else ""
            rclpy.shutdown()
    assert "ready" in out and "Traceback" not in out, out[-3000:]


def _stamp(msg) -> float:
    header = msg.markers[0].header if hasattr(msg, "markers") else msg.header
    return header.stamp.sec + header.stamp.nanosec * 1e-9



def test_keyframes_survive_a_slow_fragment(monkeypatch):
    """Frames arrive at 50 Hz into a frame queue of 2 while every fragment takes 0.3 s more: the
    keyframe test runs where frames arrive, so no keyframe waits behind a fragment (and none is
    dropped); the node maps exactly the keyframes an offline pass selects."""
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo

    from gnesf_ros.ros import conversions as conv
    from gnesf_ros.ros.node import MappingNode
    from gnesf_ros.ros.sync import SyncedInput

    frames, _ = synthetic_frames(2003, 80, 1, SIZE)
    stamps = [100.0 + 0.02 * i for i in range(len(frames))]
    keyframes = _keyframe_stamps(frames, stamps)
    values = {**LIGHT, "mapper.camera.height": SIZE[0], "mapper.camera.width": SIZE[1],
              "mapper.keyframe.fragment_size": 3, "mapper.keyframe.min_translation_m": 0.05,
              "mapper.keyframe.min_rotation_deg": 10.0, "queue_size": 2, "idle_flush_s": 0.5}
    with ros_domain():
        rclpy.init()
        try:
            node = MappingNode(parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
            process = node.mapper._process

            def slow_process(fragment):
                time.sleep(0.3)
                return process(fragment)

            monkeypatch.setattr(node.mapper, "_process", slow_process)
            for f, stamp in zip(frames, stamps):
                header = conv.make_header(stamp, "camera_color_optical_frame")
                node.tf.set_transform("map", header.frame_id, stamp, f.T_world_cam)
                info = CameraInfo(header=header, height=SIZE[0], width=SIZE[1])
                info.k = [float(v) for v in f.K.reshape(-1)]
                node._enqueue([SyncedInput(stamp, conv.numpy_to_image(f.rgb, "rgb8", header),
                                           conv.numpy_to_image(f.depth, "32FC1", header), info,
                                           conv.numpy_to_image(f.labels.astype("uint8"), "mono8", header))])
                time.sleep(0.02)
            deadline = time.monotonic() + 30
            while node.counts["keyframes_mapped"] < len(keyframes) and time.monotonic() < deadline:
                node._on_housekeeping()  # the timer's work (no executor spins here): idle flush
                time.sleep(0.05)
            diag = {k: v for k, v in node.diagnostics().items() if v != "0"}
            node.destroy_node()
        finally:
            rclpy.shutdown()
    assert len(keyframes) < len(frames) / 4  # most frames are not keyframes
    assert int(diag["keyframes_selected"]) == len(keyframes), diag
    assert int(diag["keyframes_mapped"]) == len(keyframes), diag
    assert "drops_queue_full" not in diag and "drops_keyframe_queue_full" not in diag, diag
    assert int(diag["frames_mapped"]) == len(frames), diag


def test_a_stray_future_frame_does_not_move_the_clock():
    """A well-formed frame stamped far in the future has no transform and is dropped; it must not
    count as the newest stamp (the next valid frames would look like a jump back and wipe the map)."""
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo

    from gnesf_ros.ros import conversions as conv
    from gnesf_ros.ros.node import MappingNode
    from gnesf_ros.ros.sync import SyncedInput

    frames, _ = synthetic_frames(2003, 8, 8, SIZE)
    values = {**LIGHT, "mapper.camera.height": SIZE[0], "mapper.camera.width": SIZE[1],
              "mapper.keyframe.fragment_size": 2, "tf_timeout_s": 0.1}

    def item(f, stamp: float, with_tf: bool):
        header = conv.make_header(stamp, "camera_color_optical_frame")
        if with_tf:
            node.tf.set_transform("map", header.frame_id, stamp, f.T_world_cam)
        info = CameraInfo(header=header, height=SIZE[0], width=SIZE[1])
        info.k = [float(v) for v in f.K.reshape(-1)]
        return SyncedInput(stamp, conv.numpy_to_image(f.rgb, "rgb8", header),
                           conv.numpy_to_image(f.depth, "32FC1", header), info,
                           conv.numpy_to_image(f.labels.astype("uint8"), "mono8", header))

    with ros_domain():
        rclpy.init()
        try:
            node = MappingNode(parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
            sequence = [(frames[0], 100.0, True), (frames[1], 100.2, True), (frames[2], 1e6, False)] + [
                (f, 100.4 + 0.2 * i, True) for i, f in enumerate(frames[3:])]
            for f, stamp, with_tf in sequence:
                node._enqueue([item(f, stamp, with_tf)])
                deadline = time.monotonic() + 5
                while not node.frame_worker.idle() and time.monotonic() < deadline:
                    time.sleep(0.01)
            deadline = time.monotonic() + 10
            while not (node.keyframe_worker.idle() and node.frame_worker.idle()) and time.monotonic() < deadline:
                time.sleep(0.01)
            diag = node.diagnostics()
            node.destroy_node()
        finally:
            rclpy.shutdown()
    assert diag["drops_no_transform"] == "1" and diag["time_jump_resets"] == "0", diag
    assert int(diag["frames_mapped"]) == len(frames) - 1 and int(diag["map_blocks"]) > 0, diag
