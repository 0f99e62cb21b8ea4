"""rclpy adapters: parameters to config, topics to core calls. Nothing here holds algorithm code."""
