"""Camera geometry (intrinsics, projection, pose checks), keyframe selection and fragment windows."""
from gnesf_ros.geometry.camera import (backproject_depth, frustum_corners, is_valid_pose, pixel_rays, project,
                                       remap_intrinsics_nearest, scale_intrinsics, view_angle_deg)
from gnesf_ros.geometry.keyframes import FragmentBuilder, KeyframeSelector, frames_bounds

__all__ = ["backproject_depth", "frustum_corners", "is_valid_pose", "pixel_rays", "project",
           "remap_intrinsics_nearest", "scale_intrinsics", "view_angle_deg",
           "FragmentBuilder", "KeyframeSelector", "frames_bounds"]
