"""The controller's core (no ROS): joint-state checks, the control tick, safety clips and statistics."""
