"""gnesf_ros: online 3D semantic mapping (GNeSF) for ROS 2. The core never imports rclpy."""
__version__ = "0.1.0"
