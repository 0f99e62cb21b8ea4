"""Episodes in and out of rosbag2 files (through the rosbags library: no ROS install needed)."""
