"""Example user tasks (docs/tasks.md), loaded by dotted name:
task.name: tdmpc_ros.tasks.examples.hover:HoverTask."""
