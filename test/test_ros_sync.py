"""Approximate-time pairing of colour/depth/info (pure python part of the node)."""
from gnesf_ros.ros.sync import ApproximateSync


def test_pairs_nearest_depth_within_slop():
    s = ApproximateSync(use_depth=True, slop_s=0.01)
    s.add_info("K")
    assert s.add_depth(1.000, "d0") == []
    assert s.add_depth(1.033, "d1") == []
    out = s.add_color(1.031, "c1")
    assert [(o.color, o.depth) for o in out] == [("c1", "d1")]
    out = s.add_color(1.004, "c0")
    assert [(o.color, o.depth) for o in out] == [("c0", "d0")]


def test_colour_waits_for_late_depth_then_times_out():
    s = ApproximateSync(use_depth=True, slop_s=0.01, max_wait_s=0.2)
    s.add_info("K")
    assert s.add_color(2.0, "c") == [] and s.pending == 1
    out = s.add_depth(2.005, "d")
    assert len(out) == 1 and out[0].depth == "d" and out[0].stamp == 2.0 and s.pending == 0
    assert s.add_color(3.0, "c_late") == []
    s.add_depth(3.5, "far")  # too far: c_late expires
    assert s.drops["no_depth"] == 1 and s.pending == 0


def test_without_camera_info_nothing_is_emitted_and_drops_counted():
    s = ApproximateSync(use_depth=False)
    for i in range(3):
        assert s.add_color(float(i), i) == []
    assert s.drops["no_camera_info"] == 2
    s.add_info("K")
    out = s.add_color(3.0, 3)
    assert [o.color for o in out] == [2, 3]


def test_buffers_are_bounded():
    s = ApproximateSync(use_depth=True, buffer_len=4, max_wait_s=100)
    s.add_info("K")
    for i in range(10):
        s.add_color(float(i), i)
    assert s.drops["sync_overflow"] == 6


def test_colour_waits_for_depth_and_segmentation():
    s = ApproximateSync(use_depth=True, use_segmentation=True, slop_s=0.01, max_wait_s=0.2)
    s.add_info("K")
    assert s.add_color(1.0, "c") == []
    assert s.add_depth(1.0, "d") == []  # segmentation still missing
    out = s.add_segmentation(1.002, "s")
    assert [(o.color, o.depth, o.segmentation) for o in out] == [("c", "d", "s")]
    s.add_color(2.0, "c2")
    s.add_depth(2.0, "d2")
    s.add_depth(2.3, "d3")  # c2's segmentation never came
    assert s.drops["no_segmentation"] == 1


def test_time_jump_back_clears_stale_buffers():
    s = ApproximateSync(use_depth=True, slop_s=0.01, jump_back_s=1.0)
    s.add_info("K")
    s.add_depth(100.0, "future depth")  # from the previous loop of a bag
    out = s.add_color(5.0, "c")  # 95 s back: a new loop
    assert out == [] and s.jumps == 1
    out = s.add_depth(5.0, "d")
    assert [(o.color, o.depth) for o in out] == [("c", "d")]


def test_drops_reach_the_callback_with_a_reason_a_person_can_act_on():
    told = []
    s = ApproximateSync(use_depth=True, slop_s=0.01, max_wait_s=0.2, on_drop=lambda r, m: told.append((r, m)))
    s.add_color(1.0, "c0")
    s.add_color(1.1, "c1")  # no camera_info yet: c0 goes
    s.add_info("K")
    s.add_depth(2.0, "d")  # c1 never finds depth within the wait
    assert [r for r, _ in told] == ["no_camera_info", "no_depth"]
    assert "camera_info topic" in told[0][1] and "sync_slop_s" in told[1][1]
    assert not s.drops  # the callback owns the counting
