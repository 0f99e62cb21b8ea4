"""Topic and service names shared by nodes, bags and tests. Relative names, so a launch namespace applies."""

JOINT_STATES = "joint_states"
GOAL = "goal"                        # geometry_msgs/PointStamped, one per episode
TRANSITIONS = "transitions"          # tdmpc_ros/msg/Transition, one per control step
MODEL_UPDATES = "model_updates"      # tdmpc_ros/msg/ModelUpdate
PLANNER_STATUS = "planner_status"    # tdmpc_ros/msg/PlannerStatus
LEARNER_PROGRESS = "learner_progress"  # tdmpc_ros/msg/LearnerProgress
DIAGNOSTICS = "/diagnostics"         # diagnostic_msgs/DiagnosticArray (global, as aggregators expect)

# Command conventions (controller.output -> default topic)
COMMAND_TOPICS = {
    "float64_multi_array": "forward_position_controller/commands",  # ros2_control forward_command_controller
    "joint_trajectory": "joint_trajectory_controller/joint_trajectory",
    "joint_state": "joint_command",                                  # Isaac Sim ROS 2 bridge
}

# Services
SIM_RESET = "reset"                  # std_srvs/Trigger on the arm: new episode, new goal
CONTROLLER_ENABLE = "controller/enable"  # std_srvs/SetBool
CONTROLLER_RESET = "controller/reset"    # std_srvs/Trigger: new episode id, planner warm start cleared
