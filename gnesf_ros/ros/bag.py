"""ROS 2 bags (rosbag2 layout, MCAP or sqlite3) of posed RGB-D sequences: write, inspect, read.

Written with rosbags (no rclpy needed), following rosbag2's conventions so ``ros2 bag play`` /
``ros2 bag info`` on a real ROS 2 install handle them: metadata.yaml version 9 with each topic's
offered QoS profiles and RIHS01 type hash (Kilted definitions), CDR payloads, log time = stamp.

Topics (see :class:`BagLayout`): colour image (rgb8), depth (16UC1 millimetres, registered to the
colour camera: same size, intrinsics and frame), camera_info, ``/tf`` (map -> camera_link per
frame) and ``/tf_static`` (camera_link -> camera_color_optical_frame, the REP-103 optical
rotation), so ``map -> camera_color_optical_frame`` at an image's stamp is the frame's
``T_world_cam``. Optionally (``labels=True``) the frames' label images (20-class indices, 255 =
unknown) as mono8 on the segmentation topic, stamped and framed like the colour image: a recorded
external segmenter that the node (``mapper.segmenter.backend: external``) and ``gnesf-map
--segmenter external`` both consume.

Integrity: MCAP files are written with each chunk's CRC-32 and the summary CRC (rosbags alone
leaves both 0), and bags are written beside the target and renamed into place when complete.
:func:`bag_summary` (``gnesf-bag info``, ``gnesf-map BAG``) reads the data files, not only
metadata.yaml (:func:`verify_bag`); the readers (:func:`open_reader`) check the summary CRC on
open and each chunk's CRC as they read it. A missing, empty, truncated or corrupt data file is a
DataError naming it. sqlite3 has no checksums: only its structure (quick_check) and counts are
checked.
"""
from __future__ import annotations

import binascii
import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from gnesf_ros.atomic import fsync_dir, fsync_tree
from gnesf_ros.errors import DataError
from gnesf_ros.geometry.tf_buffer import TransformBuffer, TransformError, invert_transform, split_transform
from gnesf_ros.types import Frame

log = logging.getLogger(__name__)

# camera_link (x forward, y left, z up) -> optical frame (x right, y down, z forward)
T_LINK_OPTICAL = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]])
DEFAULT_START_TIME_S = 1_600_000_000.0  # a fixed epoch: deterministic bags, never the "latest" stamp 0
STORAGES = ("mcap", "sqlite3")


@dataclass(frozen=True)
class BagLayout:
    """Topic names, frame ids and QoS depth of the bags gnesf-bag writes (RealSense-like names)."""

    color_topic: str = "/camera/color/image_raw"
    depth_topic: str = "/camera/depth/image_rect_raw"
    info_topic: str = "/camera/color/camera_info"
    segmentation_topic: str = "/segmentation/probabilities"  # the node's segmentation_topic default
    tf_topic: str = "/tf"
    tf_static_topic: str = "/tf_static"
    map_frame: str = "map"
    camera_link_frame: str = "camera_link"
    optical_frame: str = "camera_color_optical_frame"
    qos_depth: int = 10


@dataclass
class BagSummary:
    """What a bag holds: storage, duration (s), per-topic type and message count."""

    path: Path
    storage: str
    duration_s: float
    start_s: float
    topics: dict[str, tuple[str, int]] = field(default_factory=dict)  # topic -> (type, count)
    qos: dict[str, list[dict]] = field(default_factory=dict)
    data: BagData | None = None  # the data files read (bag_summary(verify=True)), None: not read

    def format(self) -> str:
        lines = [f"bag:      {self.path}", f"storage:  {self.storage}",
                 f"duration: {self.duration_s:.3f} s (start {self.start_s:.3f})"]
        if self.data is not None:
            lines.append(f"data:     {self.data.format()}")
        lines.append("topics:")
        for topic, (typ, n) in sorted(self.topics.items()):
            q = self.qos.get(topic) or [{}]
            lines.append(f"  {topic:32s} {typ:32s} {n:6d} msgs  "
                         f"{q[0].get('reliability', '?')}/{q[0].get('durability', '?')}")
        return "\n".join(lines)


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)  # same RIHS01 hashes as the ros-kilted wheels


def _qos(depth: int, transient_local: bool = False):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


def _crc_mcap_writer():
    """rosbags' MCAP storage writer, also writing each chunk's CRC-32 (of the uncompressed chunk
    records, as the MCAP spec defines it): rosbags 0.11 leaves it 0 ("not computed"), so neither
    its reader nor mcap's could catch a corrupt byte inside a chunk."""
    from rosbags.rosbag2.storage_mcap import McapWriter

    class CrcMcapWriter(McapWriter):
        def close_chunk(self) -> None:
            with self.chunk.bio.getbuffer() as records:
                crc = binascii.crc32(records)
            start = self.bio.tell()
            super().close_chunk()  # chunk record at ``start``, then its message indexes
            end = self.bio.tell()
            # chunk record: opcode (1), length (8), message start / end time (8 + 8), uncompressed size (8), CRC
            self.bio.seek(start + _CHUNK_CRC_OFFSET)
            self.bio.write(crc.to_bytes(4, "little"))
            self.bio.seek(end)

        def close(self, version: int, metadata: str) -> None:
            super().close(version, metadata)  # summary section, footer (summary CRC 0), magic; file closed
            with open(self.path, "r+b") as fh:
                stored, crc, at = _mcap_summary_crc(fh)
                fh.seek(at)
                fh.write(crc.to_bytes(4, "little"))

    return CrcMcapWriter


_CHUNK_CRC_OFFSET = 1 + 8 + 8 + 8 + 8
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_MCAP_FOOTER = 1 + 8 + 8 + 8 + 4  # opcode, length, summary start, summary offset start, summary CRC


def _mcap_summary_crc(fh) -> tuple[int, int, int]:
    """(stored, computed, file offset) of an MCAP file's summary CRC: the CRC-32 of every byte from
    the summary section's start through the footer's summary_offset_start field (MCAP spec).
    Reads only the summary section. ValueError when the file does not end in a footer and magic."""
    size = fh.seek(0, 2)
    footer_at = size - len(_MCAP_MAGIC) - _MCAP_FOOTER
    if footer_at < len(_MCAP_MAGIC):
        raise ValueError(f"{size} bytes: too short for an MCAP file")
    fh.seek(footer_at)
    tail = fh.read(_MCAP_FOOTER + len(_MCAP_MAGIC))
    if tail[0] != 0x02 or int.from_bytes(tail[1:9], "little") != 20 or tail[_MCAP_FOOTER:] != _MCAP_MAGIC:
        raise ValueError("no MCAP footer and end magic at the end of the file (truncated?)")
    start = int.from_bytes(tail[9:17], "little") or footer_at  # 0: no summary section
    if not len(_MCAP_MAGIC) <= start <= footer_at:
        raise ValueError(f"footer: summary start {start} outside the file")
    fh.seek(start)
    crc = binascii.crc32(fh.read(footer_at - start))
    crc = binascii.crc32(tail[:_MCAP_FOOTER - 4], crc)
    return int.from_bytes(tail[_MCAP_FOOTER - 4:_MCAP_FOOTER], "little"), crc, footer_at + _MCAP_FOOTER - 4


def _check_mcap_summary(file: Path) -> bool:
    """DataError when ``file``'s summary section (channels, schemas, chunk index: what readers
    seek by) does not match its CRC; False when the file has no summary CRC (0)."""
    try:
        with open(file, "rb") as fh:
            stored, crc, _ = _mcap_summary_crc(fh)
    except ValueError as e:
        raise DataError(f"{file}: corrupt or truncated MCAP file ({e})") from None
    if stored and stored != crc:
        raise DataError(f"{file}: corrupt MCAP summary section (index): CRC mismatch")
    return bool(stored)


class BagWriter:
    """Writes frames to a new rosbag2 bag at ``path`` (a directory; must not exist).

    Use as a context manager; ``add(frame, stamp_ns)`` per frame. Reliable offered QoS everywhere
    (compatible with best-effort and reliable subscribers); /tf_static transient local.
    ``labels``: also write each frame's ``labels`` (HxW uint8 class indices) as mono8 on
    ``layout.segmentation_topic``.
    """

    def __init__(self, path: str | Path, storage: str = "mcap", layout: BagLayout = BagLayout(),
                 labels: bool = False) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise DataError(f"bag storage must be one of {', '.join(STORAGES)}, got '{storage}'")
        self.path = Path(path)
        if self.path.exists():
            raise DataError(f"{self.path} exists already; choose a new output path")
        self.layout = layout
        self.ts = _typestore()
        self._writer = Writer(self.path, version=9,
                              storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
        # chunks with their CRC-32 (rosbags writes 0 = "not computed"), so readers catch corrupt bytes
        self._writer.STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: _crc_mcap_writer()}
        self._writer.open()
        L, d = layout, layout.qos_depth
        add = self._writer.add_connection
        self._conn = {
            "tf_static": add(L.tf_static_topic, "tf2_msgs/msg/TFMessage", typestore=self.ts,
                             offered_qos_profiles=[_qos(1, transient_local=True)]),
            "tf": add(L.tf_topic, "tf2_msgs/msg/TFMessage", typestore=self.ts, offered_qos_profiles=[_qos(100)]),
            "info": add(L.info_topic, "sensor_msgs/msg/CameraInfo", typestore=self.ts, offered_qos_profiles=[_qos(d)]),
            "color": add(L.color_topic, "sensor_msgs/msg/Image", typestore=self.ts, offered_qos_profiles=[_qos(d)]),
            "depth": add(L.depth_topic, "sensor_msgs/msg/Image", typestore=self.ts, offered_qos_profiles=[_qos(d)]),
        }
        self.labels = labels
        if labels:
            self._conn["segmentation"] = add(L.segmentation_topic, "sensor_msgs/msg/Image", typestore=self.ts,
                                             offered_qos_profiles=[_qos(d)])
        self.num_frames = 0
        self._last_stamp = 0

    # ------------------------------------------------------------------ message builders
    def _t(self, name: str):
        return self.ts.types[name]

    def _header(self, stamp_ns: int, frame_id: str):
        Time = self._t("builtin_interfaces/msg/Time")
        return self._t("std_msgs/msg/Header")(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                                              frame_id=frame_id)

    def _transform(self, stamp_ns: int, parent: str, child: str, T: np.ndarray):
        t, q = split_transform(T)
        V3, Q = self._t("geometry_msgs/msg/Vector3"), self._t("geometry_msgs/msg/Quaternion")
        tf = self._t("geometry_msgs/msg/Transform")(translation=V3(x=t[0], y=t[1], z=t[2]),
                                                    rotation=Q(x=q[0], y=q[1], z=q[2], w=q[3]))
        return self._t("geometry_msgs/msg/TransformStamped")(header=self._header(stamp_ns, parent),
                                                            child_frame_id=child, transform=tf)

    def _image(self, stamp_ns: int, arr: np.ndarray, encoding: str):
        h, w = arr.shape[:2]
        data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        return self._t("sensor_msgs/msg/Image")(header=self._header(stamp_ns, self.layout.optical_frame),
                                                height=h, width=w, encoding=encoding, is_bigendian=0,
                                                step=data.size // h, data=data)

    def _camera_info(self, stamp_ns: int, K: np.ndarray, size: tuple[int, int]):
        K = np.asarray(K, np.float64)
        P = np.zeros((3, 4))
        P[:, :3] = K
        roi = self._t("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0,
                                                          do_rectify=False)
        return self._t("sensor_msgs/msg/CameraInfo")(
            header=self._header(stamp_ns, self.layout.optical_frame), height=size[0], width=size[1],
            distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1),
            p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)

    def _write(self, key: str, stamp_ns: int, msg) -> None:
        self._writer.write(self._conn[key], stamp_ns, self.ts.serialize_cdr(msg, msg.__msgtype__))

    # ------------------------------------------------------------------ public
    def add(self, frame: Frame, stamp_ns: int) -> None:
        """Write one frame at ``stamp_ns`` (integer nanoseconds, > 0, increasing): /tf,
        camera_info, colour, depth (if the frame has one), segmentation (with ``labels``). The
        first frame also writes /tf_static."""
        if not stamp_ns > self._last_stamp:
            raise DataError(f"frame stamps must increase: {stamp_ns * 1e-9:.9f} s after {self._last_stamp * 1e-9:.9f} s")
        if frame.rgb.dtype != np.uint8 or frame.rgb.ndim != 3 or frame.rgb.shape[2] != 3:
            raise DataError(f"frame {frame.index}: rgb must be HxWx3 uint8, got {frame.rgb.dtype} {frame.rgb.shape}")
        try:
            T_map_link = np.asarray(frame.T_world_cam, np.float64) @ invert_transform(T_LINK_OPTICAL)
            split_transform(T_map_link)
        except TransformError as e:
            raise DataError(f"frame {frame.index}: invalid pose: {e}") from e
        if self.labels:
            self._check_labels(frame)
        self._last_stamp = ns = int(stamp_ns)
        L = self.layout
        TFMessage = self._t("tf2_msgs/msg/TFMessage")
        if self.num_frames == 0:
            self._write("tf_static", ns, TFMessage(transforms=[
                self._transform(ns, L.camera_link_frame, L.optical_frame, T_LINK_OPTICAL)]))
        self._write("tf", ns, TFMessage(transforms=[self._transform(ns, L.map_frame, L.camera_link_frame, T_map_link)]))
        self._write("info", ns, self._camera_info(ns, frame.K, frame.size))
        self._write("color", ns, self._image(ns, frame.rgb, "rgb8"))
        if frame.depth is not None:
            if frame.depth.shape != frame.size:
                raise DataError(f"frame {frame.index}: depth {frame.depth.shape} must match colour {frame.size} "
                                "(registered depth)")
            self._write("depth", ns, self._image(ns, depth_to_mm(frame.depth), "16UC1"))
        if self.labels:
            self._write("segmentation", ns, self._image(ns, frame.labels, "mono8"))
        self.num_frames += 1

    @staticmethod
    def _check_labels(frame: Frame) -> None:
        if frame.labels is None:
            raise DataError(f"frame {frame.index}: no label images to write (the scene has no label-filt/ "
                            "images); convert without --labels")
        lab = frame.labels
        if lab.dtype != np.uint8 or lab.shape != frame.size:
            raise DataError(f"frame {frame.index}: labels must be HxW uint8 class indices of the colour size "
                            f"{frame.size}, got {lab.dtype} {lab.shape}")

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """HxW float metres -> uint16 millimetres (REP 118); invalid (<= 0, non-finite, > 65.535 m) -> 0."""
    mm = np.round(np.nan_to_num(np.asarray(depth_m, np.float64), nan=0.0, posinf=0.0) * 1000.0)
    return np.where((mm > 0) & (mm <= 65535), mm, 0).astype(np.uint16)


def write_bag(frames: Iterable[Frame], out: str | Path, storage: str = "mcap", rate_hz: float | None = 30.0,
              start_time_s: float = DEFAULT_START_TIME_S, layout: BagLayout = BagLayout(),
              labels: bool = False) -> BagSummary:
    """Write ``frames`` to a new bag at ``out``. Stamps: ``start_time_s + i / rate_hz`` for the i-th
    frame, or ``start_time_s + frame.stamp`` (the file's own times) when ``rate_hz`` is None.
    ``labels``: also write ``frame.labels`` on the segmentation topic (every frame must have them).
    Written in a hidden sibling folder (``.OUT.*``), read back (:func:`verify_bag`), flushed to disk
    and renamed to ``out`` when complete: a failure or an interruption leaves no bag at ``out``
    (a SIGKILL can leave the hidden folder behind, never a half bag at ``out``)."""
    out = Path(out)
    if out.exists():
        raise DataError(f"{out} exists already; choose a new output path")
    if rate_hz is not None and not rate_hz > 0:
        raise DataError(f"rate must be > 0 Hz, got {rate_hz}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # rosbags names the storage file after the bag folder (and embeds that name): build under
        # the final name inside a temporary parent, then move.
        tmp_parent = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except (FileExistsError, NotADirectoryError) as e:
        raise DataError(f"cannot create the bag {out}: {e.filename or out.parent} is not a directory") from None
    start_ns = int(round(start_time_s * 1e9))
    tmp = tmp_parent / out.name
    try:
        with BagWriter(tmp, storage, layout, labels) as w:
            for i, frame in enumerate(frames):
                offset = i * 1e9 / rate_hz if rate_hz is not None else float(frame.stamp) * 1e9
                w.add(frame, start_ns + int(round(offset)))
        if w.num_frames == 0:
            raise DataError("no frames to write")
        summary = bag_summary(tmp)  # read back: what lands at ``out`` is a complete, readable bag
        fsync_tree(tmp)
        if out.exists():
            raise DataError(f"{out} appeared while the bag was written; not overwriting it")
        tmp.rename(out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    summary.path = out
    return summary


def read_metadata(path: str | Path) -> dict:
    """The ``rosbag2_bagfile_information`` mapping of a bag's metadata.yaml; DataError naming the
    file when it is missing, not UTF-8 or not a rosbag2 metadata mapping."""
    meta = Path(path) / "metadata.yaml"
    if not meta.is_file():
        raise DataError(f"{path} is not a ROS 2 bag: no metadata.yaml")
    try:
        info = yaml.safe_load(meta.read_bytes().decode("utf-8"))["rosbag2_bagfile_information"]
    except UnicodeDecodeError as e:
        raise DataError(f"{meta}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise DataError(f"{meta}: not a rosbag2 metadata file ({type(e).__name__}: {e})") from None
    if not isinstance(info, dict):
        raise DataError(f"{meta}: not a rosbag2 metadata file (rosbag2_bagfile_information is not a mapping)")
    return info


@dataclass
class BagData:
    """What the data files of a bag hold, read message by message (:func:`verify_bag`)."""

    counts: Counter  # topic -> messages
    files: int = 0
    bytes: int = 0
    chunks: int = 0  # MCAP chunks
    crc_chunks: int = 0  # ... of them with a CRC, verified
    summary_crcs: int = 0  # MCAP files whose summary section (index) had a CRC, verified

    def format(self) -> str:
        text = f"{sum(self.counts.values())} messages in {self.files} file(s) ({self.bytes / 1e6:.1f} MB) read"
        if self.chunks:
            text += f"; {self.crc_chunks} of {self.chunks} chunks CRC-checked"
            if self.crc_chunks < self.chunks:
                text += f" ({self.chunks - self.crc_chunks} written without a CRC: their bytes cannot be checked)"
            text += ", summary CRC-checked" if self.summary_crcs == self.files else ", summary without a CRC"
        return text


def _metadata_counts(path: Path, info: dict) -> tuple[dict[str, tuple[str, int]], dict[str, list]]:
    """topic -> (type, message count) and topic -> offered QoS profiles, from metadata.yaml."""
    topics, qos = {}, {}
    try:
        for t in info.get("topics_with_message_count") or []:
            md = t["topic_metadata"]
            topics[str(md["name"])] = (str(md["type"]), int(t["message_count"]))
            q = md.get("offered_qos_profiles") or []
            qos[md["name"]] = yaml.safe_load(q) if isinstance(q, str) else q  # version <= 8 stored a YAML string
    except (KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError) as e:
        raise DataError(f"{path}/metadata.yaml: malformed topics_with_message_count ({type(e).__name__}: {e})") from None
    return topics, qos


def _data_files(path: Path, info: dict) -> list[Path]:
    rel = info.get("relative_file_paths")
    if not isinstance(rel, list) or not rel or not all(isinstance(r, str) and r for r in rel):
        raise DataError(f"{path}/metadata.yaml: relative_file_paths must list the bag's data files, got {rel!r}")
    return [path / r for r in rel]


def _scan_mcap(file: Path, counts: Counter) -> tuple[int, int, bool]:
    """Count ``file``'s messages per topic into ``counts``, checking the summary section's CRC,
    every chunk (size, CRC when written) and the record structure up to the footer. Returns
    (chunks, chunks with a CRC, whether the summary had a CRC)."""
    import struct

    from mcap.exceptions import EndOfFile, McapError
    from mcap.records import Channel, Chunk, Message
    from mcap.stream_reader import StreamReader
    from rosbags.rosbag2 import ReaderError
    from rosbags.rosbag2.storage_mcap import decompress

    summary_crc = _check_mcap_summary(file)
    channels: dict[int, str] = {}
    by_channel: Counter = Counter()
    chunks = crc_chunks = 0

    def take(rec) -> None:
        if isinstance(rec, Channel):  # the summary section repeats the declarations: they must agree
            if channels.setdefault(rec.id, rec.topic) != rec.topic:
                raise ValueError(f"channel {rec.id} declared as {channels[rec.id]} and as {rec.topic}")
        elif isinstance(rec, Message):
            by_channel[rec.channel_id] += 1

    try:
        with open(file, "rb") as fh:
            # chunks checked here (size, CRC); mcap's whole-file CRC (DataEnd, 0 in rosbags' files) would
            # read every byte a second time
            for rec in StreamReader(fh, emit_chunks=True, validate_crcs=False).records:
                if isinstance(rec, Chunk):
                    chunks += 1
                    crc_chunks += rec.uncompressed_crc != 0
                    # rosbags' check: supported compression, exact uncompressed size, CRC when written
                    raw = decompress(rec.data, rec.compression, rec.uncompressed_size, rec.uncompressed_crc)
                    _count_chunk_records(memoryview(raw), channels, by_channel)
                else:
                    take(rec)
    except EndOfFile:
        raise DataError(f"{file}: truncated MCAP file (ends before its footer)") from None
    except ReaderError as e:
        raise DataError(f"{file}: corrupt MCAP chunk #{chunks}: {e}") from None
    except (McapError, ValueError, struct.error, UnicodeDecodeError, KeyError, IndexError, OverflowError) as e:
        raise DataError(f"{file}: corrupt or truncated MCAP file ({type(e).__name__}: {e})") from None
    unknown = set(by_channel) - set(channels)
    if unknown:
        raise DataError(f"{file}: corrupt MCAP file (messages on undeclared channel(s) {sorted(unknown)})")
    for cid, n in by_channel.items():
        counts[channels[cid]] += n
    return chunks, crc_chunks, summary_crc


def _count_chunk_records(raw: memoryview, channels: dict[int, str], by_channel: Counter) -> None:
    """Walk the records of one decompressed MCAP chunk without copying message payloads: channel
    declarations into ``channels`` (id -> topic), messages counted per channel id. ValueError for
    a record that runs past the chunk."""
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 9 > end:
            raise ValueError(f"record header at chunk byte {pos} runs past the chunk ({end} bytes)")
        op, length = raw[pos], int.from_bytes(raw[pos + 1:pos + 9], "little")
        body = pos + 9
        if body + length > end:
            raise ValueError(f"record at chunk byte {pos} (opcode {op:#x}, {length} bytes) runs past the chunk")
        if op == 0x05:  # Message: channel id (u16), sequence, log and publish time, payload
            if length < 22:
                raise ValueError(f"message record at chunk byte {pos} is {length} bytes (< 22)")
            by_channel[int.from_bytes(raw[body:body + 2], "little")] += 1
        elif op == 0x04:  # Channel: id (u16), schema id (u16), topic (u32 length + UTF-8), ...
            n = int.from_bytes(raw[body + 4:body + 8], "little")
            if length < 8 or 8 + n > length:
                raise ValueError(f"channel record at chunk byte {pos} is malformed")
            cid, topic = int.from_bytes(raw[body:body + 2], "little"), bytes(raw[body + 8:body + 8 + n]).decode("utf-8")
            if channels.setdefault(cid, topic) != topic:
                raise ValueError(f"channel {cid} declared as {channels[cid]} and as {topic}")
        pos = body + length


def _scan_sqlite3(file: Path, counts: Counter) -> None:
    """Count ``file``'s messages per topic into ``counts`` (rosbag2's sqlite3 schema), after
    SQLite's quick_check of the database structure (sqlite3 has no checksums over the data)."""
    import sqlite3
    from urllib.request import pathname2url

    try:
        con = sqlite3.connect(f"file:{pathname2url(str(file.resolve()))}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise DataError(f"{file}: cannot open the sqlite3 database ({e})") from None
    try:
        check = con.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            found = "; ".join(line.strip() for r in check[:3] for line in str(r[0]).splitlines() if line.strip())
            raise DataError(f"{file}: corrupt sqlite3 database (quick_check: {found})")
        for name, n in con.execute("SELECT t.name, COUNT(m.id) FROM topics t LEFT JOIN messages m "
                                   "ON m.topic_id = t.id GROUP BY t.id"):
            counts[name] += n
        stray = con.execute("SELECT COUNT(*) FROM messages WHERE topic_id NOT IN (SELECT id FROM topics)").fetchone()[0]
        if stray:
            raise DataError(f"{file}: {stray} message(s) on topic ids the topics table does not declare")
    except sqlite3.Error as e:
        raise DataError(f"{file}: not a readable rosbag2 sqlite3 database ({e})") from None
    finally:
        con.close()


def verify_bag(path: str | Path, info: dict | None = None) -> BagData:
    """Read every data file of the bag at ``path`` (the ones metadata.yaml lists) and count its
    messages per topic from the data: MCAP record by record up to the footer, each chunk's size and
    CRC checked (CRCs of 0, as older writers leave them, cannot be checked); sqlite3 after SQLite's
    quick_check. DataError naming the file when one is missing, empty, truncated or corrupt, or when
    the counts differ from metadata.yaml's."""
    path = Path(path)
    info = read_metadata(path) if info is None else info
    meta_topics, _ = _metadata_counts(path, info)
    data = BagData(counts=Counter())
    files = _data_files(path, info)
    for file in files:
        if not file.is_file():
            raise DataError(f"{file}: data file missing (listed in {path / 'metadata.yaml'})")
        size = file.stat().st_size
        if size == 0:
            raise DataError(f"{file}: data file is empty (0 bytes)")
        before = sum(data.counts.values())
        if file.suffix == ".mcap" or (file.suffix != ".db3" and info.get("storage_identifier") == "mcap"):
            chunks, crc_chunks, summary_crc = _scan_mcap(file, data.counts)
            data.chunks += chunks
            data.crc_chunks += crc_chunks
            data.summary_crcs += summary_crc
        elif file.suffix == ".db3" or info.get("storage_identifier") == "sqlite3":
            _scan_sqlite3(file, data.counts)
        else:
            raise DataError(f"{file}: unknown bag storage '{info.get('storage_identifier')}' (mcap or sqlite3)")
        data.files += 1
        data.bytes += size
        _check_file_count(path, info, file, sum(data.counts.values()) - before)
    for topic in sorted(set(meta_topics) | set(data.counts)):
        want, got = meta_topics.get(topic, ("", 0))[1], data.counts.get(topic, 0)
        if want != got:
            where = files[0] if len(files) == 1 else path
            raise DataError(f"{where}: topic {topic}: metadata.yaml lists {want} messages, the data holds {got} "
                            "(incomplete or altered bag)")
    return data


def _check_file_count(path: Path, info: dict, file: Path, got: int) -> None:
    """metadata.yaml's per-file message count (``files``, rosbag2 version >= 5) against the data."""
    for entry in info.get("files") or []:
        if isinstance(entry, dict) and entry.get("path") == file.name and "message_count" in entry:
            try:
                want = int(entry["message_count"])
            except (TypeError, ValueError):
                raise DataError(f"{path}/metadata.yaml: files: bad message_count {entry['message_count']!r}") from None
            if want != got:
                raise DataError(f"{file}: metadata.yaml lists {want} messages in this file, it holds {got} "
                                "(incomplete or altered bag)")


def bag_summary(path: str | Path, verify: bool = True) -> BagSummary:
    """What metadata.yaml says the bag holds; with ``verify`` (default) also the data files read
    (:func:`verify_bag`): DataError when they are missing, damaged or disagree with the metadata."""
    info = read_metadata(path)
    topics, qos = _metadata_counts(Path(path), info)
    try:
        duration_s = int(info["duration"]["nanoseconds"]) * 1e-9
        start_s = int(info["starting_time"]["nanoseconds_since_epoch"]) * 1e-9
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}/metadata.yaml: missing or bad field {e} (not a complete rosbag2 bag)") from None
    summary = BagSummary(path=Path(path), storage=str(info.get("storage_identifier", "?")), duration_s=duration_s,
                         start_s=start_s, topics=topics, qos=qos)
    if verify:
        summary.data = verify_bag(path, info)
    return summary


def _reader_errors() -> tuple[type[BaseException], ...]:
    """What rosbags raises while parsing damaged storage files (ValueError covers UnicodeDecodeError
    of damaged schema / channel / metadata records; apsw is its sqlite3 driver)."""
    import struct

    import apsw
    from rosbags.rosbag2 import ReaderError

    return ReaderError, FileNotFoundError, apsw.Error, struct.error, ValueError, IndexError, KeyError, EOFError


def _unreadable(path, e: BaseException) -> DataError:
    return DataError(f"cannot read bag {path}: {' '.join(str(e).split()) or type(e).__name__}")


def _checked_reader_class():
    """rosbags' Reader whose messages() turn its reading errors (a chunk's CRC or size wrong, a
    truncated file) into a DataError naming the bag."""
    from rosbags.rosbag2 import Reader

    errors = _reader_errors()

    class CheckedReader(Reader):
        def messages(self, *args, **kwargs):
            try:
                yield from super().messages(*args, **kwargs)
            except errors as e:
                raise _unreadable(self.path, e) from None

    return CheckedReader


def open_reader(path: str | Path, verify: bool = False):
    """A rosbags Reader (opened); DataError for a missing or unreadable bag. Its ``messages()``
    check each MCAP chunk's CRC (when written: gnesf-bag writes them) as they read it and raise a
    DataError naming the bag for a corrupt chunk. ``verify``: read all data files first
    (:func:`verify_bag`)."""
    info = read_metadata(path)
    for file in _data_files(Path(path), info):
        if not file.is_file() or file.stat().st_size == 0:
            raise DataError(f"{file}: data file {'missing' if not file.exists() else 'is empty (0 bytes)'}")
        if file.suffix == ".mcap":
            _check_mcap_summary(file)  # the index rosbags seeks by; the chunks are checked as they are read
    if verify:
        verify_bag(path, info)
    try:
        reader = _checked_reader_class()(Path(path))
        reader.open()
    except _reader_errors() as e:
        raise _unreadable(path, e) from None
    return reader


def header_stamps_ns(path: str | Path, topic: str) -> list[int]:
    """``header.stamp`` (integer nanoseconds) of every message on ``topic``, in bag order."""
    ts = _typestore()
    reader = open_reader(path)
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise DataError(f"{path}: no topic {topic}")
        out = []
        for conn, _, raw in reader.messages(connections=conns):
            stamp = ts.deserialize_cdr(raw, conn.msgtype).header.stamp
            out.append(stamp.sec * 10**9 + stamp.nanosec)
        return out
    finally:
        reader.close()


def require_topics(path: str | Path, topics, layout: BagLayout = BagLayout()) -> None:
    """DataError naming the bag and the missing topic when ``topics`` (the bag's topic names) lack
    the colour image or camera_info topic of ``layout``: no frame can be built without them."""
    for topic, what in ((layout.color_topic, "colour image"), (layout.info_topic, "camera_info")):
        if topic not in topics:
            raise DataError(f"{path}: no {what} topic {topic} in the bag "
                            f"(topics: {', '.join(sorted(topics)) or 'none'})")


def read_frames(path: str | Path, size: tuple[int, int] | None = None, layout: BagLayout = BagLayout(),
                tolerance_s: float = 0.0, skipped: Counter | None = None,
                max_pixels: int | None = None) -> Iterator[Frame]:
    """Frames of a bag, converted exactly as the node converts its inputs.

    Each colour image is grouped with the camera_info, depth image (when the bag has the depth
    topic) and segmentation image (when it has the segmentation topic) of the same stamp into a
    :class:`~gnesf_ros.ros.sync.SyncedInput`, posed by TF ``map -> <image frame_id>`` at the image
    stamp (within ``tolerance_s``) and turned into a Frame by the node's
    :func:`gnesf_ros.ros.inputs.to_frame` at the processing size ``size`` (h, w; None: the image's
    own size): the same checks (camera_info size vs image, finite pinhole K, depth registered to
    colour, segmentation encoding and aspect) and the same resizing rule and intrinsics scaling.

    Frames the node would drop are skipped, never raised: one warning per reason (the node's drop
    reasons: ``camera_info_mismatch``, ``bad_camera_info``, ``no_transform``, ``no_depth`` ...), all
    counted in ``skipped`` (pass a Counter to read the counts). A bag without the colour or the
    camera_info topic is a DataError.

    The segmentation image becomes ``Frame.probs`` as sent (HxW class indices or HxWxC float
    scores, not resized: the external segmenter resizes it, exactly as in the node). It is
    segmenter output, not ground truth: ``Frame.labels`` stays None."""
    from gnesf_ros.classes import default_class_table
    from gnesf_ros.config import CameraConfig
    from gnesf_ros.geometry.camera import is_valid_pose
    from gnesf_ros.ros import conversions as conv
    from gnesf_ros.ros.inputs import InputRejected, to_frame
    from gnesf_ros.ros.parameters import NodeConfig
    from gnesf_ros.ros.sync import SyncedInput

    max_pixels = NodeConfig.max_image_pixels if max_pixels is None else max_pixels  # the node's default

    skipped = Counter() if skipped is None else skipped
    seen = set(skipped)  # reasons already warned about (by an earlier pass sharing the counter)

    def skip(reason: str, stamp: float, detail: str) -> None:
        if reason not in seen:
            seen.add(reason)
            log.warning("%s: skipping frames the node would drop as %s (first at %.6f s: %s); "
                        "further ones are only counted", path, reason, stamp, detail)
        skipped[reason] += 1

    ts = _typestore()
    reader = open_reader(path)
    try:
        topics = {c.topic for c in reader.connections}
        require_topics(path, topics, layout)
        tf = TransformBuffer(cache_time_s=1e9, tolerance_s=tolerance_s)  # whole bag: the TF is small
        tf_conns = [c for c in reader.connections if c.topic in (layout.tf_topic, layout.tf_static_topic)]
        for conn, _, raw in reader.messages(connections=tf_conns):
            static = conn.topic == layout.tf_static_topic
            for tr in ts.deserialize_cdr(raw, conn.msgtype).transforms:
                t, r = tr.transform.translation, tr.transform.rotation
                try:
                    tf.set_transform(tr.header.frame_id, tr.child_frame_id, conv.stamp_to_sec(tr.header.stamp),
                                     translation=(t.x, t.y, t.z), quaternion=(r.x, r.y, r.z, r.w), static=static)
                except TransformError as e:
                    log.warning("%s: ignoring transform: %s", path, e)
        # Partners a colour image needs, with the node's drop reason when one never comes.
        needed = [(layout.info_topic, "no_camera_info")]
        needed += [(t, r) for t, r in ((layout.depth_topic, "no_depth"), (layout.segmentation_topic, "no_segmentation"))
                   if t in topics]
        img_conns = [c for c in reader.connections if c.topic == layout.color_topic or c.topic in dict(needed)]
        num_classes = default_class_table().num_classes
        index = 0

        def missing(slot: dict) -> str | None:
            if layout.color_topic not in slot:
                return "no_color"
            return next((reason for topic, reason in needed if topic not in slot), None)

        def incomplete(key: int, slot: dict) -> None:
            reason = missing(slot)
            if reason == "no_color":  # partners without a colour image: not a frame
                log.debug("%s: %s at %.6f without a colour image", path, sorted(slot), key * 1e-9)
            else:
                skip(reason, key * 1e-9, f"has only {', '.join(sorted(slot))}")

        def convert(item: SyncedInput) -> Frame:
            try:
                T = tf.lookup(layout.map_frame, item.color.header.frame_id, item.stamp)
            except TransformError as e:
                raise InputRejected("no_transform", f"no pose {layout.map_frame} -> {item.color.header.frame_id}: "
                                                    f"{e}") from None
            if not is_valid_pose(T):
                raise InputRejected("invalid_pose", "transform is not a finite rigid motion")
            if size is not None:
                camera = CameraConfig(height=int(size[0]), width=int(size[1]))
            else:  # native size: nothing resized
                camera = CameraConfig(height=int(item.color.height), width=int(item.color.width))
            return to_frame(item, T, camera, max_pixels, index, num_classes)

        pending: dict[int, dict] = {}
        for conn, _, raw in reader.messages(connections=img_conns):
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            key = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            slot = pending.setdefault(key, {})
            slot[conn.topic] = msg
            if missing(slot) is not None:
                continue
            del pending[key]
            for old in sorted(k for k in pending if k < key):  # incomplete older frames never complete
                incomplete(old, pending.pop(old))
            color = slot[layout.color_topic]
            stamp = conv.stamp_to_sec(color.header.stamp)
            item = SyncedInput(stamp, color, slot.get(layout.depth_topic), slot[layout.info_topic],
                               slot.get(layout.segmentation_topic))
            try:
                frame = convert(item)
            except InputRejected as e:
                skip(e.reason, stamp, str(e))
                continue
            yield frame
            index += 1
        for old in sorted(pending):
            incomplete(old, pending[old])
        if skipped:
            log.info("%s: %d frames read, %d skipped (%s)", path, index, sum(skipped.values()),
                     ", ".join(f"{r} {n}" for r, n in sorted(skipped.items())))
    finally:
        reader.close()


def is_bag(path: str | Path) -> bool:
    """True for a rosbag2 folder (it holds metadata.yaml)."""
    return (Path(path) / "metadata.yaml").is_file()


class BagFrameSource:
    """A bag as a frame source for ``gnesf-map`` (same shape as data.scannet's FrameSource).

    Frames are converted as the node converts them (:func:`read_frames`); ``skipped`` counts the
    frames of the last pass that the node would have dropped, by drop reason. A bag without the
    colour or camera_info topic is refused here (DataError). Bags carry no ground truth:
    ``gt_mesh_path`` is whatever the caller passes (e.g. ``--gt``)."""

    def __init__(self, path: str | Path, size: tuple[int, int] | None = None, max_frames: int | None = None,
                 stride: int = 1, gt_mesh_path: str | Path | None = None, layout: BagLayout = BagLayout()):
        self.path = Path(path)
        self.size = size
        self.layout = layout
        self.max_frames = max_frames
        self.stride = max(int(stride), 1)
        self.scene_name = self.path.name
        self.gt_mesh_path = Path(gt_mesh_path) if gt_mesh_path else None
        self.skipped: Counter = Counter()
        summary = bag_summary(self.path)
        require_topics(self.path, summary.topics, layout)
        count = summary.topics[layout.color_topic][1]
        n = -(-count // self.stride)
        self._len = min(n, max_frames) if max_frames else n

    @property
    def skipped_poses(self) -> int:
        """Frames skipped for a missing or invalid pose (as data.scannet's FrameSource)."""
        return self.skipped["no_transform"] + self.skipped["invalid_pose"]

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Frame]:
        self.skipped = Counter()
        emitted = 0
        for i, frame in enumerate(read_frames(self.path, self.size, self.layout, skipped=self.skipped)):
            if i % self.stride:
                continue
            if self.max_frames and emitted >= self.max_frames:
                return
            emitted += 1
            yield frame
