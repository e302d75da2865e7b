"""Node replay benchmark: the node, as shipped, maps a bag played at 1x over DDS; compared with gnesf-map.

An unseen test-split scene (seeds 2000-2999) is generated at 640x480 and converted to a bag without
labels (so the node and gnesf-map both run the default segmenter, the shipped Mask2Former, and the
default mode rgbd). ``gnesf-map BAG --gt GT`` (default config) is the offline reference: its
keyframes and 3D mIoU. The node runs with config/mapping.yaml plus only use_sim_time, reliable
input QoS, an input history deep enough for the bag and 10 Hz diagnostics, in an isolated ROS domain; ``gnesf-bag
play BAG --clock --rate R`` replays the bag; this process subscribes to the mesh, /diagnostics and
the colour images (test/node_harness.py ReplayProbe) and measures:

- keyframes mapped by the node (diagnostics ``keyframes_mapped``) / keyframes gnesf-map selects;
- drops by reason (diagnostics ``drops_*``, non-zero only);
- mesh latency per offline keyframe: wall arrival of the first mesh whose stamp >= the keyframe's
  stamp (the node stamps map outputs with the newest keyframe in the map) minus the wall arrival of
  that keyframe's colour image here (p50 / p95; keyframes no mesh covered are counted as uncovered;
  a colour image this process missed has its arrival estimated from the nearest one it saw), split
  into the bag time until the keyframe the mesh is stamped with arrived and the rest. In rgbd mode a
  keyframe's depth is in the map (and the next mesh) at once; its window's semantics follow:
- semantic latency per offline keyframe: arrival of the first /diagnostics whose ``semantic_stamp``
  (newest keyframe whose window was voted and fused) covers it, minus the colour arrival (the
  benchmark sets diagnostics_rate_hz 10 for this; the labelled mesh follows within 1 / publish_rate_hz);
- final mesh delay: arrival of the last mesh - arrival of the last colour image;
- whether /diagnostics kept publishing after the bag ended (>= 2 messages after the player exited
  and after the final mesh);
- node RSS (diagnostics ``rss_mb``, max seen), start-up time (process start -> outputs matched, and
  -> its 'ready' log line), the node mesh's 3D mIoU vs gnesf-map's.

Target (issue): 2 cores, default config, 640x480 at 30 Hz, 1x: 100 % of keyframes mapped, mesh
latency p95 < 3 s.

    .venv/bin/python benchmarks/node_replay.py [--seed 2500] [--frames 300] [--rate 1] [--workdir DIR]

Prints markdown; writes benchmarks/results/node_replay.json (machine, commit, every figure).
``run_replay`` is the one instrument; test/test_node_replay.py calls it with a shorter bag.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT / "test"))
from node_harness import LogPump, ReplayProbe, mesh_from_markers, start_node  # noqa: E402
from ros_env import ros_domain, spawn  # noqa: E402

SIZE = (480, 640)  # generated and bag image size (height, width)
START_S = 1_600_000_000.0  # stamp of the first bag frame (gnesf-bag convert's default)
PLAYER_DELAY_S = 3.0  # gnesf-bag play --delay: discovery time before the first message
NODE_OVERRIDES = {"use_sim_time": True, "input_qos": "reliable", "input_qos_depth": 1000,
                  "diagnostics_rate_hz": 10.0}  # the instrument of the semantic latency; mapping unaffected
# Diagnostics that must all be 0 for the node to be done with the bag (missing keys count as 0).
IDLE_KEYS = ("pending_keyframes", "keyframe_queue_depth", "mapping_busy", "queue_depth", "sync_pending",
             "map_changes_unpublished")
# Keys the node promises (gnesf_ros/ros/node.py contract); reported when missing.
CONTRACT_KEYS = ("keyframes_selected", "keyframes_mapped", "keyframe_queue_depth", "mapping_busy", "queue_depth",
                 "pending_keyframes", "map_changes_unpublished", "rss_mb", "frames_received", "frames_mapped")


def _shipped_params() -> dict:
    return yaml.safe_load((ROOT / "config" / "mapping.yaml").read_text())["gnesf_mapping"]["ros__parameters"]


# ----------------------------------------------------------------------------- inputs
def make_bag(workdir: Path, seed: int, frames: int) -> tuple[Path, Path]:
    """generate_scene (640x480) + ``gnesf-bag convert`` (no labels) -> (bag, GT mesh); reused when present."""
    from gnesf_ros.cli.bag import main as bag_main
    from gnesf_ros.data.synthetic import generate_scene, scene_name

    data = workdir / f"scene{seed}_{frames}"
    scene, bag = data / scene_name(seed), workdir / f"scene{seed}_{frames}.bag"
    gt = scene / f"{scene.name}_vh_clean_2.labels.ply"
    if not (bag / "metadata.yaml").is_file() or not gt.is_file():
        scene = generate_scene(data, seed=seed, frames=frames, size=SIZE)
        if bag.exists():
            import shutil
            shutil.rmtree(bag)
        with open(workdir / "convert.log", "w") as f, contextlib.redirect_stdout(f):  # its summary
            rc = bag_main(["convert", str(scene), str(bag), "--start-time", str(START_S)])
        if rc != 0:
            raise RuntimeError(f"gnesf-bag convert {scene} failed")
    return bag, gt


def offline_reference(bag: Path, gt: Path, out: Path) -> dict:
    """``gnesf-map BAG --gt GT --heldout-every 0`` with the default config (its metrics), plus the
    keyframe stamps (ns) that the same selector picks on the bag's frames."""
    from gnesf_ros.cli.map import main as map_main
    from gnesf_ros.config import load_config
    from gnesf_ros.geometry.keyframes import KeyframeSelector
    from gnesf_ros.ros.bag import BagLayout, header_stamps_ns, read_frames

    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gnesf_map.log", "w") as f, contextlib.redirect_stdout(f):  # its markdown summary
        rc = map_main([str(bag), "--out", str(out), "--gt", str(gt), "--heldout-every", "0"])
    if rc != 0:
        raise RuntimeError(f"gnesf-map {bag} failed (see {out / 'gnesf_map.log'})")
    metrics = json.loads((out / "metrics.json").read_text())
    map_s = time.monotonic() - t0
    color_ns = np.array(header_stamps_ns(bag, BagLayout().color_topic), np.int64)
    cfg = load_config(None)  # what gnesf-map used (no --config)
    selector = KeyframeSelector(cfg.keyframe)
    stamps = []
    for frame in read_frames(bag):  # poses only matter: no resizing
        if selector.accept(frame.T_world_cam):
            # float seconds -> the colour header stamp in integer ns (float64 is ~0.2 us coarse here)
            stamps.append(int(color_ns[np.argmin(np.abs(color_ns - round(frame.stamp * 1e9)))]))
    return {"keyframes": int(metrics["throughput"]["keyframes"]), "keyframe_stamps_ns": stamps,
            "miou": float(metrics["semantic"]["miou"]), "busy_s": metrics["throughput"]["busy_s"],
            "model_load_s": metrics["throughput"]["model_load_s"], "fragments": metrics["counters"]["fragments"],
            "timings_ms_total": metrics["timings_ms"].get("total"), "mode": metrics["mode"],
            "segmenter": metrics["config"]["segmenter"]["backend"], "processing_size": [
                metrics["config"]["camera"]["height"], metrics["config"]["camera"]["width"]],
            "peak_rss_mb": metrics["peak_rss_mb"], "wall_s": map_s, "color_stamps_ns": color_ns.tolist()}


# ----------------------------------------------------------------------------- the replay
def _num(diag: dict, key: str, default: float | None = 0.0) -> float | None:
    try:
        return float(diag[key])
    except (KeyError, ValueError):
        return default


def _wait(predicate, timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def replay_node(bag: Path, workdir: Path, n_color: int, last_keyframe_ns: int | None, rate: float,
                overrides: dict | None, settle_timeout_s: float, log) -> dict:
    """Start the node, play the bag, wait until the node is done; -> raw recordings (wall times)."""
    import rclpy

    from gnesf_ros.ros.bag import bag_summary

    params = dict(NODE_OVERRIDES, **(overrides or {}))
    diag_period = 1.0 / max(float(params.get("diagnostics_rate_hz", _shipped_params()["diagnostics_rate_hz"])), 0.1)
    duration = bag_summary(bag).duration_s / rate
    rec: dict = {"overrides": params}
    with ros_domain() as env:
        rclpy.init()
        probe = node = pump = player = None
        try:
            probe = ReplayProbe()
            t_start = time.monotonic()
            node = start_node(env, params, workdir, name="replay_node")
            pump = LogPump(node)

            def matched() -> bool:
                if node.poll() is not None:
                    raise RuntimeError(f"the node exited with {node.returncode} before it was ready:\n"
                                       f"{pump.text()[-4000:]}")
                return all(s.get_publisher_count() > 0 for s in probe._output_subs)

            if not _wait(matched, 180.0):
                raise RuntimeError(f"the node's outputs never matched in 180 s:\n{pump.text()[-4000:]}")
            t_ready = time.monotonic()
            time.sleep(0.3)  # the node's side of the match
            rec["startup_s"] = t_ready - t_start
            log(f"node ready (outputs matched) {rec['startup_s']:.1f} s after start; playing {bag.name} at {rate}x")
            # The player waits for one subscriber per topic (the node's, or this probe's) and then
            # PLAYER_DELAY_S: the other's discovery of it must finish by then or it misses the first
            # messages (volatile). Colour images this probe misses get estimated arrival times.
            player = spawn([sys.executable, "-m", "gnesf_ros.cli.bag", "play", str(bag), "--clock", "--rate",
                            str(rate), "--wait-for-subscribers", "60", "--delay", str(PLAYER_DELAY_S)], env)
            t_play = time.monotonic()
            _wait(lambda: probe._color_sub.get_publisher_count() > 0 or player.poll() is not None, 60.0, 0.01)
            rec["colour_matched_after_spawn_s"] = time.monotonic() - t_play
            try:
                player_out, player_err = player.communicate(timeout=duration + 120)
            except subprocess.TimeoutExpired:
                player.kill()
                player_out, player_err = player.communicate()
            t_end = time.monotonic()
            rec.update(player_rc=player.returncode, player_out=player_out.strip(), player_wall_s=t_end - t_play)
            log(f"player done ({player_out.strip()}); waiting for the node to go idle")

            # Done: nothing queued or pending (missing keys count as 0), every colour message the node
            # will get counted (all of them, or no change for 3 s), seen in diagnostics sent after the bag.
            last = {"color": -1.0, "t": time.monotonic()}
            stale_s = max(15.0, 5 * diag_period)
            note = {"settle": "timeout"}

            def done() -> bool:
                s = probe.snapshot()
                d, times = s["diag"], s["diag_times"]
                now = time.monotonic()
                if not times or times[-1] < t_end:
                    if now - max(times[-1] if times else t_end, t_end) > stale_s:
                        note["settle"] = f"no /diagnostics for {stale_s:.0f} s after the bag ended"
                        return True
                    return False
                color = _num(d, "color_msgs")
                if color != last["color"]:
                    last.update(color=color, t=now)
                received_all = color >= n_color or now - last["t"] > 3.0
                if received_all and all(_num(d, k) == 0 for k in IDLE_KEYS):
                    note["settle"] = "idle"
                    return True
                return False

            _wait(done, settle_timeout_s, poll=0.1)
            t_idle = time.monotonic()
            rec.update(settle=note["settle"], settle_s=t_idle - t_end)
            if note["settle"] == "idle":
                # /diagnostics may overtake the (large) final mesh: give it time to cover the last keyframe
                def final_mesh() -> bool:
                    arr = probe.snapshot()["mesh_arrivals"]
                    return bool(arr) and last_keyframe_ns is not None and (arr[-1][1] or 0) >= last_keyframe_ns
                _wait(final_mesh, 5.0)
                time.sleep(0.5)
                # then two more diagnostics after the player's exit and the final mesh (steady-clock timer)
                def after() -> bool:
                    s = probe.snapshot()
                    ref = max([t_end] + [t for t, _ in s["mesh_arrivals"]])
                    return sum(t > ref for t in s["diag_times"]) >= 2
                _wait(after, 2.5 * diag_period + 2.0)
            else:
                time.sleep(min(3.0, 2.5 * diag_period))
            snap = probe.snapshot()
            rec.update(snap)
            rec.update(t_start=t_start, t_ready=t_ready, t_play=t_play, t_player_end=t_end, t_idle=t_idle)
            t0 = time.monotonic()
            rec["last_mesh"] = probe.last_mesh()
            rec["mesh_deserialise_s"] = time.monotonic() - t0
        finally:
            if player is not None and player.poll() is None:
                player.kill()
                player.communicate()
            node_log = pump.stop() if pump is not None else ""
            if probe is not None:
                probe.close()
            rclpy.shutdown()
    rec["node_rc"] = node.returncode if node is not None else None
    ready = pump.first_seen.get(r"\bready\b") if pump is not None else None
    rec["ready_log_s"] = ready - rec["t_start"] if ready is not None else None
    (workdir / "node.log").write_text(node_log)
    rec["node_log"] = str(workdir / "node.log")
    return rec


def _percentiles(x: list[float]) -> dict:
    if not x:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    a = np.asarray(x, np.float64)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "max": float(a.max()),
            "n": int(a.size)}


def run_replay(workdir: str | Path, seed: int = 2500, frames: int = 300, rate: float = 1.0,
               overrides: dict | None = None, settle_timeout_s: float = 60.0, log=print) -> dict:
    """Generate scene ``seed`` (test split; ``frames`` at 30 Hz, 640x480), convert it to a bag,
    map it offline with gnesf-map (reference), replay it to the node at ``rate`` and measure (see
    the module doc). ``overrides``: node parameters on top of the replay's own (experiments only:
    the benchmark's figures use none). Missing node diagnostics keys are reported as None /
    listed in ``node.missing_keys``; nothing here fails on them. Returns every figure (JSON-able)."""
    from gnesf_ros.classes import default_class_table
    from gnesf_ros.data.ply import read_labeled_ply
    from gnesf_ros.eval.metrics import semantic_3d

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    t0 = time.monotonic()
    bag, gt = make_bag(workdir, seed, frames)
    t_bag = time.monotonic() - t0
    log(f"bag {bag} ({t_bag:.1f} s); mapping it offline with gnesf-map")
    off = offline_reference(bag, gt, workdir / "offline")
    kf_ns = off["keyframe_stamps_ns"]
    color_ns = off.pop("color_stamps_ns")
    log(f"gnesf-map: {off['keyframes']} keyframes ({len(kf_ns)} by the selector), 3D mIoU {off['miou']:.4f}")
    rec = replay_node(bag, workdir, len(color_ns), kf_ns[-1] if kf_ns else None, rate, overrides,
                      settle_timeout_s, log)

    diag, dmax = rec["diag"], rec["diag_max"]
    missing_keys = [k for k in CONTRACT_KEYS if k not in diag]
    kf_mapped = _num(diag, "keyframes_mapped", None)
    n_off = off["keyframes"]
    # latency: first mesh whose stamp >= the keyframe's stamp, from that colour image's arrival here
    meshes = [(t, s) for t, s in rec["mesh_arrivals"] if s is not None]
    colors = rec["color_arrivals"]
    seen = np.array(sorted(colors), np.int64)

    def color_arrival(stamp: int) -> tuple[float | None, bool]:
        """Wall arrival of the colour image ``stamp`` here; one this probe missed (DDS may drop
        samples for a slow reader: the player keeps 10) is estimated from the nearest one seen,
        shifted by the stamp difference / rate. -> (time or None, estimated)."""
        if stamp in colors:
            return colors[stamp], False
        if not len(seen):
            return None, True
        near = int(seen[np.argmin(np.abs(seen - stamp))])
        return colors[near] + (stamp - near) * 1e-9 / rate, True

    lat, wait, after, uncovered, estimated = [], [], [], 0, 0
    for k in kf_ns:
        t_mesh, s_mesh = next(((t, s) for t, s in meshes if s >= k), (None, None))
        t_color, est = color_arrival(k)
        if t_mesh is None or t_color is None:
            uncovered += 1
        else:
            lat.append(t_mesh - t_color)
            # split: bag time until the keyframe that closed its map update (the mesh's stamp) arrived,
            # and the rest (mapping the fragment, meshing, publishing, DDS)
            wait.append((s_mesh - k) * 1e-9 / rate)
            after.append(lat[-1] - wait[-1])
            estimated += est
    # semantic latency: until /diagnostics first reports the keyframe's window fused (semantic_stamp);
    # the mesh with those labels follows within 1 / publish_rate_hz (diagnostics at 10 Hz here)
    sem_lat = []
    for k in kf_ns:
        t_sem = next((t for t, s in rec["semantic_stamps"] if s * 1e9 >= k - 1000), None)
        t_color, _ = color_arrival(k)
        if t_sem is not None and t_color is not None:
            sem_lat.append(t_sem - t_color)
    last_color_t, last_est = color_arrival(color_ns[-1]) if color_ns else (None, False)
    final_delay = (meshes[-1][0] - last_color_t) if meshes and last_color_t is not None else None
    ref_end = rec["t_player_end"]
    ref_mesh = max([ref_end] + [t for t, _ in rec["mesh_arrivals"]])
    diag_after_player = sum(t > ref_end for t in rec["diag_times"])
    diag_after_mesh = sum(t > ref_mesh for t in rec["diag_times"])

    miou_node, mesh_vertices = None, 0
    if rec["last_mesh"] is not None:
        table = default_class_table()
        mesh = mesh_from_markers(rec["last_mesh"], table)
        mesh_vertices = int(len(mesh.vertices))
        if mesh_vertices:
            miou_node = float(semantic_3d(mesh, read_labeled_ply(gt), table)["miou"])

    drops = {k[len("drops_"):]: int(float(v)) for k, v in diag.items() if k.startswith("drops_") and float(v) != 0}
    last_stamp = meshes[-1][1] if meshes else None
    return {
        "seed": seed, "frames": frames, "size": list(SIZE), "rate": rate, "bag_colour_images": len(color_ns),
        "bag_duration_s": (color_ns[-1] - color_ns[0]) * 1e-9 if color_ns else 0.0,
        "offline": {k: v for k, v in off.items() if k != "keyframe_stamps_ns"},
        "offline_keyframes_selector": len(kf_ns),
        "node": {
            "overrides": rec["overrides"], "startup_s": rec["startup_s"], "ready_log_s": rec["ready_log_s"],
            "keyframes_selected": _num(diag, "keyframes_selected", None), "keyframes_mapped": kf_mapped,
            "mapper_keyframes": _num(diag, "mapper_keyframes", None),
            "frames_received": _num(diag, "frames_received", None), "frames_mapped": _num(diag, "frames_mapped", None),
            "color_msgs": _num(diag, "color_msgs", None), "colour_images_at_probe": len(colors),
            "colour_indices_missed_at_probe": [i for i, s in enumerate(color_ns) if s not in colors],
            "probe_colour_matched_after_player_spawn_s": rec["colour_matched_after_spawn_s"],
            "drops": drops, "rss_mb_max": dmax.get("rss_mb"), "last_fragment_ms": _num(diag, "last_fragment_ms", None),
            "fragment_ms_max": dmax.get("last_fragment_ms"), "flushes": _num(diag, "flushes", None),
            "fragment_stage_ms_max": {k[len("last_fragment_"):-len("_ms")]: v for k, v in dmax.items()
                                      if k.startswith("last_fragment_") and k.endswith("_ms")},
            "miou": miou_node, "mesh_vertices": mesh_vertices, "mesh_messages": len(rec["mesh_arrivals"]),
            "last_mesh_stamp_s": last_stamp * 1e-9 if last_stamp is not None else None,
            "diagnostics_messages": len(rec["diag_times"]), "missing_keys": missing_keys,
            "final_diagnostics": diag, "exit_code": rec["node_rc"], "log": rec["node_log"],
        },
        "keyframes_mapped_ratio": kf_mapped / n_off if kf_mapped is not None and n_off else None,
        "latency_s": dict(_percentiles(lat), uncovered=uncovered, colour_arrival_estimated=estimated,
                          keyframes=len(kf_ns), window_wait=_percentiles(wait), after_window=_percentiles(after)),
        "semantic_latency_s": _percentiles(sem_lat),
        "final_mesh_delay_s": final_delay, "final_mesh_delay_colour_estimated": last_est,
        "final_mesh_covers_last_keyframe": bool(kf_ns and last_stamp is not None and last_stamp >= kf_ns[-1]),
        "idle_flush_s": float(rec["overrides"].get("idle_flush_s", _shipped_params()["idle_flush_s"])),
        "diagnostics_after_bag": {"after_player_exit": diag_after_player, "after_final_mesh": diag_after_mesh,
                                  "kept_publishing": diag_after_player >= 2 and diag_after_mesh >= 2},
        "miou_diff": miou_node - off["miou"] if miou_node is not None else None,
        "settle": rec["settle"], "settle_s": rec["settle_s"], "player": {
            "rc": rec["player_rc"], "out": rec["player_out"], "wall_s": rec["player_wall_s"]},
        "timings_s": {"scene_and_bag": t_bag, "offline_map": off["wall_s"],
                      "mesh_deserialise": rec["mesh_deserialise_s"], "total": time.monotonic() - t0},
        "loadavg_1min": {"start": load_start[0], "end": os.getloadavg()[0]},  # shared machines: context for timings
    }


# ----------------------------------------------------------------------------- report
def machine_info() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "torch": torch.__version__}


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               cwd=ROOT).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _f(x, fmt: str = ".2f") -> str:
    return "unknown" if x is None else format(x, fmt)


def markdown(r: dict) -> str:
    n, lat, d = r["node"], r["latency_s"], r["diagnostics_after_bag"]
    mapped = "unknown (no keyframes_mapped)" if n["keyframes_mapped"] is None else (
        f"{n['keyframes_mapped']:.0f} / {r['offline']['keyframes']} ({100 * r['keyframes_mapped_ratio']:.1f} %)")
    rows = [
        ("scene / bag", f"seed {r['seed']}, {r['bag_colour_images']} frames {r['size'][1]}x{r['size'][0]}, "
                        f"{r['bag_duration_s']:.1f} s, played at {r['rate']}x"),
        ("keyframes mapped / selected offline (target 100 %)", mapped),
        ("node keyframes selected (mapper_keyframes)",
         f"{_f(n['keyframes_selected'], '.0f')} ({_f(n['mapper_keyframes'], '.0f')})"),
        ("frames: colour at node / received / mapped (bag; colour seen here)",
         f"{_f(n['color_msgs'], '.0f')} / {_f(n['frames_received'], '.0f')} / {_f(n['frames_mapped'], '.0f')} "
         f"({r['bag_colour_images']}; {n['colour_images_at_probe']})"),
        ("drops by reason", ", ".join(f"{k} {v}" for k, v in sorted(n["drops"].items())) or "none"),
        ("mesh latency p50 / p95 / max, s (target p95 < 3 s)",
         f"{_f(lat['p50'])} / {_f(lat['p95'])} / {_f(lat['max'])} over {lat['n']} of {lat['keyframes']} keyframes"
         + (f"; {lat['uncovered']} never in a mesh" if lat["uncovered"] else "")
         + (f"; {lat['colour_arrival_estimated']} colour arrivals estimated (missed here)"
            if lat["colour_arrival_estimated"] else "")),
        ("semantic latency p50 / p95 / max, s (until the keyframe's window is voted and fused)",
         f"{_f(r['semantic_latency_s']['p50'])} / {_f(r['semantic_latency_s']['p95'])} / "
         f"{_f(r['semantic_latency_s']['max'])} over {r['semantic_latency_s']['n']} keyframes"),
        ("mesh latency split: until the keyframe that the mesh is stamped with / the rest, p50 / p95, s",
         f"{_f(lat['window_wait']['p50'])} / {_f(lat['window_wait']['p95'])}; "
         f"{_f(lat['after_window']['p50'])} / {_f(lat['after_window']['p95'])}"),
        ("final mesh delay after the last frame, s",
         f"{_f(r['final_mesh_delay_s'])} (idle_flush_s {r['idle_flush_s']}, fragment "
         f"{_f(n['fragment_ms_max'], '.0f')} ms max; covers last keyframe: {r['final_mesh_covers_last_keyframe']})"),
        ("/diagnostics after the bag: after player exit / after final mesh",
         f"{d['after_player_exit']} / {d['after_final_mesh']} (kept publishing: {d['kept_publishing']})"),
        ("3D mIoU node / gnesf-map (diff)", f"{_f(n['miou'], '.4f')} / {r['offline']['miou']:.4f} "
                                            f"({_f(r['miou_diff'], '+.4f')})"),
        ("node RSS max, MB", _f(n["rss_mb_max"], ".0f")),
        ("node start-up: outputs matched / 'ready' logged, s", f"{n['startup_s']:.1f} / {_f(n['ready_log_s'], '.1f')}"),
        ("gnesf-map busy / model load, s", f"{r['offline']['busy_s']:.1f} / {r['offline']['model_load_s']:.1f}"),
        ("settled", f"{r['settle']} ({r['settle_s']:.1f} s after the player exited)"),
        ("machine load (1-min average) at start / end", f"{r['loadavg_1min']['start']:.1f} / "
                                                        f"{r['loadavg_1min']['end']:.1f} on {os.cpu_count()} CPUs"),
    ]
    if n["missing_keys"]:
        rows.append(("diagnostics keys missing", ", ".join(n["missing_keys"])))
    out = ["| node replay | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=2500, help="synthetic scene seed (test split 2000-2999)")
    ap.add_argument("--frames", type=int, default=300, help="frames at 30 Hz (300 = 10 s)")
    ap.add_argument("--rate", type=float, default=1.0, help="playback rate")
    ap.add_argument("--workdir", type=Path, help="scene, bag, offline map, node log (default: a temporary folder; "
                                                  "a bag already there is reused)")
    ap.add_argument("--settle-timeout", type=float, default=60.0, help="max seconds to wait for the node after the bag")
    ap.add_argument("--out-json", type=Path, default=RESULTS / "node_replay.json")
    args = ap.parse_args()
    if not 2000 <= args.seed <= 2999:
        print(f"warning: seed {args.seed} is outside the test split 2000-2999", file=sys.stderr)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gnesf_node_replay_"))
    res = run_replay(workdir, seed=args.seed, frames=args.frames, rate=args.rate,
                     settle_timeout_s=args.settle_timeout, log=lambda m: print(m, file=sys.stderr, flush=True))
    out = {"benchmark": "node_replay", "commit": git_commit(), "machine": machine_info(), "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "workdir": str(workdir), **res}
    print(markdown(res))
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(out, indent=2, default=float))
    print(f"\nwrote {args.out_json}")


if __name__ == "__main__":
    main()
