"""The PyBullet arm (no ROS), the configured task as a gymnasium env, and scripted-expert demonstrations."""
