"""The PyBullet arm (no ROS), the reach task as a gymnasium env, and a scripted expert."""
