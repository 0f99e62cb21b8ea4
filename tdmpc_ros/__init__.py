"""tdmpc_ros: TD-MPC2 world-model MPC for ROS 2 arms.

Subpackages model, planner, learning and data are pure PyTorch/NumPy; nodes/ holds the rclpy adapters.
"""
# The generated messages (tdmpc_ros.msg) are installed by CMake into the venv's site-packages while the
# Python code may be imported from the source tree: let the package span both directories.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
