"""The TD-MPC2 world model: layers, numerics and the model itself (pure PyTorch)."""
from tdmpc_ros.model.world_model import COMPONENTS, WorldModel, parameter_counts

__all__ = ["COMPONENTS", "WorldModel", "parameter_counts"]
