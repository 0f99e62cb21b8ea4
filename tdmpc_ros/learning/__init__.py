"""Learning: the TD-MPC2 agent update, checkpoints, replay and the online learner (pure PyTorch, no ROS)."""
