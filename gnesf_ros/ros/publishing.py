"""Map outputs -> ROS messages on their publishers (mesh, cloud, grids, label info, renders)."""
from __future__ import annotations

import numpy as np
from nav_msgs.msg import OccupancyGrid
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from gnesf_ros.classes import ClassTable
from gnesf_ros.ros import conversions as conv

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
MESH_NS = "gnesf_mesh"
UNKNOWN_COLOR = (128, 128, 128)


class MapPublishers:
    """Publishers of the map products. Map topics are reliable + transient local, so late
    subscribers (RViz, navigation) receive the latest map; per-frame renders are volatile and
    only computed when someone subscribes."""

    def __init__(self, node: Node, table: ClassTable, max_vertices_per_marker: int):
        self.node = node
        self.table = table
        self.max_vertices = max_vertices_per_marker
        self._markers_sent = 0
        self._pending: set[str] = set()  # map products not sent for lack of subscribers
        pub = node.create_publisher
        self.mesh = pub(MarkerArray, "gnesf/semantic_mesh", LATCHED)
        self.cloud = pub(PointCloud2, "gnesf/semantic_cloud", LATCHED)
        self.occupancy = pub(OccupancyGrid, "gnesf/occupancy", LATCHED)
        self.class_grid = pub(OccupancyGrid, "gnesf/class_grid", LATCHED)
        self.label_image = pub(Image, "gnesf/label_image", 10)
        self.label_color = pub(Image, "gnesf/label_image_color", 10)
        self.depth_render = pub(Image, "gnesf/depth_render", 10)
        self.label_info = None
        try:  # vision_msgs is generated at install time; without it, LabelInfo is skipped
            from vision_msgs.msg import LabelInfo
            self.label_info = pub(LabelInfo, "gnesf/label_info", LATCHED)
        except ImportError:
            node.get_logger().warning("vision_msgs not importable: gnesf/label_info disabled")

    def destroy(self) -> None:
        for p in (self.mesh, self.cloud, self.occupancy, self.class_grid, self.label_image,
                  self.label_color, self.depth_render, self.label_info):
            if p is not None:
                self.node.destroy_publisher(p)

    def publish_map(self, voxel_map, header: Header, only_pending: bool = False) -> None:
        """Mesh (TRIANGLE_LIST markers, split past max_vertices; surplus old markers deleted),
        semantic cloud, occupancy and class grids, label info, all stamped ``header``. A product
        nobody subscribes to is not computed; it stays pending until a subscriber appears
        (``has_pending_subscribers``). ``only_pending``: publish just those."""
        products = {"mesh": lambda: self._publish_mesh(voxel_map, header),
                    "cloud": lambda: self.cloud.publish(conv.semantic_cloud(header, *self._cloud(voxel_map))),
                    "occupancy": lambda: self.occupancy.publish(conv.occupancy_grid(voxel_map.occupancy_grid(), header)),
                    "class_grid": lambda: self.class_grid.publish(conv.occupancy_grid(voxel_map.class_grid(), header))}
        if self.label_info is not None:
            products["label_info"] = lambda: self.label_info.publish(conv.label_info(self.table.names, header))
        for name, publish in products.items():
            if only_pending and name not in self._pending:
                continue
            if getattr(self, name).get_subscription_count() == 0:
                self._pending.add(name)
            else:
                publish()
                self._pending.discard(name)

    def has_pending_subscribers(self) -> bool:
        """A product skipped for lack of subscribers now has one."""
        return any(getattr(self, name).get_subscription_count() > 0 for name in self._pending)

    def _publish_mesh(self, voxel_map, header: Header) -> None:
        mesh = voxel_map.extract_mesh()
        per_marker = max(1, self.max_vertices // 3)  # whole triangles per marker, as conversions does
        n = max(1, -(-len(mesh.faces) // per_marker))
        cdr, n = conv.mesh_to_marker_array_cdr(mesh, header, self.max_vertices, ns=MESH_NS,
                                               delete_ids=range(n, self._markers_sent))
        self._markers_sent = n
        self.mesh.publish(cdr)  # serialised: ~100x faster than Point/ColorRGBA objects

    @staticmethod
    def _cloud(voxel_map):
        xyz, labels, confidence, colors = voxel_map.point_cloud()
        return xyz, colors, labels, confidence

    def renders_wanted(self) -> bool:
        return any(p.get_subscription_count() > 0 for p in (self.label_image, self.label_color, self.depth_render))

    def publish_renders(self, voxel_map, T_world_cam: np.ndarray, K: np.ndarray,
                        size: tuple[int, int], header: Header) -> None:
        """Label (mono8 class index, 255 unknown), colour label (rgb8) and depth (32FC1 metres,
        0 no hit) images rendered at camera T_world_cam / K / size (height, width), stamped and
        framed like the source image (``header``)."""
        labels, depth = voxel_map.render(T_world_cam, K, size)
        if self.label_image.get_subscription_count():
            self.label_image.publish(conv.numpy_to_image(labels, "mono8", header))
        if self.label_color.get_subscription_count():
            rgb = self.table.colorize(labels, UNKNOWN_COLOR)
            self.label_color.publish(conv.numpy_to_image(rgb, "rgb8", header))
        if self.depth_render.get_subscription_count():
            self.depth_render.publish(conv.numpy_to_image(depth.astype(np.float32), "32FC1", header))
