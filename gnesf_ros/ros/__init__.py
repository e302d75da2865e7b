"""ROS 2 adapters (rclpy): message conversions, TF listener, node, bag convert/play.

Everything here may import rclpy and message packages; the core (gnesf_ros.* outside this
package) never does. Import submodules explicitly (``from gnesf_ros.ros import conversions``).
"""
