"""Global semantic voxel map: fusion, depth TSDF, meshing, raycast rendering, grids, files."""
from gnesf_ros.mapping.grids import Grid2D
from gnesf_ros.mapping.voxel_map import SemanticVoxelMap

__all__ = ["Grid2D", "SemanticVoxelMap"]
