"""Scene data: ScanNet readers/writer (exported folders and .sens), label maps, synthetic scenes."""
from gnesf_ros.data.labelmap import find_label_tsv, load_label_map
from gnesf_ros.data.scannet import FrameSource, ScanNetWriter, open_scene

__all__ = ["FrameSource", "ScanNetWriter", "open_scene", "load_label_map", "find_label_tsv"]
