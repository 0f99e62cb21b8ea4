"""Tasks: one class per task (base.py's interface); reach and push are built in."""
from tdmpc_ros.tasks.base import Expert, Scene, Sensor, Task, make_task, task_class, task_config

__all__ = ["Expert", "Scene", "Sensor", "Task", "make_task", "task_class", "task_config"]
