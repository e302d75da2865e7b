"""Bad input against the running node (separate process, real DDS): each bad message is counted
in /diagnostics under its reason, the node survives, and later good input still maps.

One node (on_time_jump: reset) takes the whole sequence; a second one in namespace /ignore
(on_time_jump: ignore) only the time-jump case. Missing model files are checked at start-up.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_harness import Probe, start_node, stop_node, synthetic_frames  # noqa: E402
from ros_env import ros_domain  # noqa: E402

import rclpy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from gnesf_ros.ros import conversions as conv  # noqa: E402

SIZE = (60, 80)
T0 = 1_700_000_000.0


def overrides(**extra) -> dict:
    cfg = {"mapper.mode": "baseline_average", "mapper.segmenter.backend": "external",
           "mapper.camera.height": SIZE[0], "mapper.camera.width": SIZE[1],
           "mapper.keyframe.fragment_size": 2, "mapper.keyframe.min_translation_m": 0.02,
           "input_qos": "reliable", "queue_size": 100, "tf_timeout_s": 0.3, "diagnostics_rate_hz": 20.0,
           "publish_rate_hz": 5.0}
    cfg.update(extra)
    return cfg


class Feeder:
    """Publishes the synthetic frames in order with increasing stamps (0.1 s apart)."""

    def __init__(self, probe: Probe, frames, frame_id: str = "camera_color_optical_frame"):
        self.probe, self.pub, self.frames, self.frame_id = probe, probe.publisher, frames, frame_id
        self.i = 0
        self.t = T0

    def next_stamp(self) -> float:
        self.t += 0.1
        return self.t

    def good(self, n: int = 1) -> None:
        """n good frames; waits until the node has mapped them."""
        target = self.probe.value("frames_mapped") + n
        for _ in range(n):
            f = self.frames[self.i % len(self.frames)]
            self.i += 1
            self.pub.publish(self.next_stamp(), f.rgb, f.depth, f.labels, f.K, f.T_world_cam, frame=self.frame_id)
        self.probe.wait_diag("frames_mapped", target)

    def bad(self, reason: str, **publish_kw) -> None:
        """One frame with something wrong (publish_kw overrides); waits for drops_<reason> to grow."""
        before = self.probe.value(f"drops_{reason}")
        f = self.frames[self.i % len(self.frames)]
        kw = dict(rgb=f.rgb, depth=f.depth, labels=f.labels, K=f.K, T=f.T_world_cam, frame=self.frame_id)
        kw.update(publish_kw)
        self.pub.publish(self.next_stamp(), **kw)
        self.probe.wait_diag(f"drops_{reason}", before + 1)


def _image(encoding: str, h: int, w: int, step: int, data: bytes, stamp: float) -> Image:
    msg = Image(height=h, width=w, encoding=encoding, step=step, is_bigendian=0)
    msg.header = conv.make_header(stamp, "camera_color_optical_frame")
    msg.data = data
    return msg


def test_bad_inputs_are_counted_and_the_node_keeps_mapping(tmp_path):
    frames, _ = synthetic_frames(2001, 12, 10, SIZE)
    save_path = tmp_path / "exit_map.npz"
    with ros_domain() as env:
        rclpy.init()
        node = node_ignore = probe = probe_ignore = None
        try:
            node = start_node(env, overrides(save_map_path=str(save_path), idle_flush_s=0.0), tmp_path, "reset")
            # windows of 100 keyframes never fill here: this node maps only through its idle flush
            node_ignore = start_node(env, overrides(on_time_jump="ignore", idle_flush_s=0.3,
                                                    **{"mapper.keyframe.fragment_size": 100}),
                                     tmp_path, "ignore", ("-r", "__ns:=/ignore"))
            probe = Probe(renders=False)
            probe_ignore = Probe(ns="/ignore", renders=False, name="gnesf_test_probe_ignore")
            probe.publisher.wait_for_subscribers(60)
            feed = Feeder(probe, frames)
            feed.good(4)
            probe.wait_diag("map_blocks", 1)
            h, w = SIZE

            # Malformed images, each followed by a good frame that still maps.
            feed.bad("unsupported_encoding", color_msg=_image("yuv422", h, w, 2 * w, bytes(2 * w * h), feed.t + 0.1))
            feed.good()
            feed.bad("empty_image", color_msg=_image("rgb8", 0, 0, 0, b"", feed.t + 0.1))
            feed.good()
            feed.bad("data_size_mismatch", color_msg=_image("rgb8", h, w, 3 * w, bytes(3 * w * h - 100), feed.t + 0.1))
            feed.good()
            feed.bad("camera_info_mismatch", info_size=(h // 2, w // 2))
            feed.good()
            nan_probs = np.full((h, w, 20), np.nan, np.float32)
            feed.bad("bad_segmentation", seg_msg=conv.numpy_to_image(
                nan_probs, "32FC20", conv.make_header(feed.t + 0.1, "camera_color_optical_frame")))
            feed.good()

            # TF: NaN and non-unit quaternions are rejected; the frame then has no pose in time.
            for q in ((np.nan, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 2.0)):
                rejected = probe.value("drops_tf_rejected")
                f = frames[feed.i % len(frames)]
                probe.publisher.publish_tf(f.T_world_cam, feed.t + 0.1, quaternion=q)
                feed.bad("no_transform", T=None)  # the image at that stamp waits tf_timeout_s, then is dropped
                assert probe.value("drops_tf_rejected") >= rejected + 1
                feed.good()
            # No transform at all for the image's frame.
            feed.bad("no_transform", T=None)
            feed.good()

            # Duplicate stamp: the second copy is dropped.
            f = frames[feed.i % len(frames)]
            feed.good()
            dup = probe.value("drops_duplicate_stamp")
            probe.publisher.publish(feed.t, f.rgb, f.depth, f.labels, f.K, f.T_world_cam)
            probe.wait_diag("drops_duplicate_stamp", dup + 1)
            feed.good()

            # A very large image (1200x1600) is downscaled to the processing size and mapped.
            f = frames[feed.i % len(frames)]
            big = (1200, 1600)
            K_big = f.K.copy()
            K_big[:2] *= big[0] / h
            K_big[:2, 2] = (f.K[:2, 2] + 0.5) * big[0] / h - 0.5
            drops = probe.total_drops()
            mapped = probe.value("frames_mapped")
            probe.publisher.publish(feed.next_stamp(), cv2.resize(f.rgb, big[::-1], interpolation=cv2.INTER_NEAREST),
                                    cv2.resize(f.depth, big[::-1], interpolation=cv2.INTER_NEAREST),
                                    cv2.resize(f.labels, big[::-1], interpolation=cv2.INTER_NEAREST), K_big, f.T_world_cam)
            probe.wait_diag("frames_mapped", mapped + 1, timeout=20)
            assert probe.total_drops() == drops

            # Time jumps back 100 s (a looping bag): reset the map, then map the new loop.
            feed.t -= 100.0
            feed.good()
            assert probe.value("time_jump_resets") == 1
            feed.good(3)
            probe.wait_diag("map_blocks", 1)

            # The /ignore node drops the older frames instead.
            feed_ignore = Feeder(probe_ignore, frames, "ignore_camera_optical_frame")
            probe_ignore.publisher.wait_for_subscribers(30)
            feed_ignore.good(3)
            feed_ignore.t -= 100.0
            feed_ignore.bad("time_backwards")
            assert probe_ignore.value("time_jump_resets") == 0
            feed_ignore.t += 200.0
            feed_ignore.good()
            probe_ignore.wait(lambda: probe_ignore.value("flushes") >= 1 and probe_ignore.value("pending_keyframes", 1) == 0,
                              10, "the idle flush of the unfinished window")
            assert probe_ignore.value("mapper_fragments") >= 1 and probe_ignore.value("map_blocks") >= 1

            # gnesf/flush maps the keyframes of the unfinished window (idle_flush_s is 0 on this node).
            for _ in range(8):
                if probe.value("pending_keyframes") >= 1:
                    break
                feed.good()
            assert probe.value("pending_keyframes") >= 1
            fragments = probe.value("mapper_fragments")
            assert probe.value("flushes") == 0
            assert probe.call("gnesf/flush").success
            probe.wait(lambda: probe.value("flushes") == 1 and probe.value("pending_keyframes", 1) == 0, 10,
                       "the flushed window")
            assert probe.value("mapper_fragments") == fragments + 1

            # Services: save, reset (map empties), and mapping resumes.
            reply = probe.call("gnesf/reset")
            assert reply.success
            probe.wait(lambda: probe.value("map_blocks", 1) == 0, 5, "an empty map after gnesf/reset")
            feed.good(3)
            probe.wait_diag("map_blocks", 1)
            reply = probe.call("gnesf/save_map")
            assert reply.success and save_path.is_file(), reply.message
            save_path.unlink()
            blocks = probe.value("map_blocks")
            assert probe.value("drops_internal_error") == 0 and node.poll() is None

            # SIGTERM saves the map to save_map_path and exits cleanly.
            node.send_signal(signal.SIGTERM)
            out, _ = node.communicate(timeout=20)
            assert node.returncode == 0, out[-2000:]
        finally:
            for p in (probe, probe_ignore):
                if p is not None:
                    p.close()
            for proc in (node, node_ignore):
                if proc is not None and proc.poll() is None:
                    stop_node(proc)
            rclpy.shutdown()
    from gnesf_ros.mapping import SemanticVoxelMap

    assert SemanticVoxelMap.load(save_path).num_blocks == blocks


@pytest.mark.parametrize("param, extra", [
    ("mapper.segmenter.checkpoint", {"mapper.segmenter.backend": "mask2former"}),
    ("mapper.model.weights", {"mapper.mode": "rgbd"}),
])
def test_missing_model_file_is_a_clear_fatal_error(tmp_path, param, extra):
    missing = str(tmp_path / "nowhere" / "model_file")
    with ros_domain() as env:
        proc = start_node(env, overrides(**extra, **{param: missing}), tmp_path)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            out = stop_node(proc)
            pytest.fail(f"node kept running with {param} missing:\n{out[-2000:]}")
    assert proc.returncode == 2
    fatal = [line for line in out.splitlines() if "FATAL" in line]
    assert fatal and param in fatal[0] and missing in fatal[0], out[-2000:]
