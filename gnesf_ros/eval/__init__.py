"""Evaluation: 3D/2D semantic IoU (Atlas / GNeSF protocol) and mesh quality (NeuralRecon)."""
from gnesf_ros.eval.metrics import (
    ConfusionAccumulator,
    evaluate_meshes,
    format_markdown,
    label_transfer_indices,
    mesh_points,
    mesh_quality,
    miou_2d,
    sample_surface,
    semantic_3d,
    transfer_labels,
    voxel_downsample,
)

__all__ = [
    "ConfusionAccumulator", "evaluate_meshes", "format_markdown", "label_transfer_indices",
    "mesh_points", "mesh_quality", "miou_2d", "sample_surface", "semantic_3d", "transfer_labels",
    "voxel_downsample",
]
