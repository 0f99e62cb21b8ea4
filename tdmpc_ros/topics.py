"""Topic and service names shared by nodes, bags and tests. Relative names, so a launch namespace applies."""

JOINT_STATES = "joint_states"
GOAL = "goal"                        # geometry_msgs/PointStamped, one per arm reset
CLOCK = "/clock"                     # rosgraph_msgs/Clock: the lockstep sim arm's time (global, as ROS expects)
TRANSITIONS = "transitions"          # tdmpc_ros/msg/Transition, one per control step
MODEL_UPDATES = "model_updates"      # tdmpc_ros/msg/ModelUpdate
MODEL_WEIGHTS = "model_weights"      # tdmpc_ros/msg/ModelWeights: the checkpoint's bytes, in pieces
PLANNER_STATUS = "planner_status"    # tdmpc_ros/msg/PlannerStatus
LEARNER_PROGRESS = "learner_progress"  # tdmpc_ros/msg/LearnerProgress
DIAGNOSTICS = "/diagnostics"         # diagnostic_msgs/DiagnosticArray (global, as aggregators expect)

# Command conventions (controller.output -> default topic)
COMMAND_TOPICS = {
    "float64_multi_array": "forward_position_controller/commands",  # ros2_control forward_command_controller
    "joint_trajectory": "joint_trajectory_controller/joint_trajectory",
    "joint_state": "joint_command",                                  # Isaac Sim ROS 2 bridge
}

# Services. A node's own services have private names (~/name, under the node's name); other nodes reach those
# of the arm.launch.py nodes as <node name>/<service>.
ENABLE = "~/enable"                      # std_srvs/SetBool on the controller
RESET = "~/reset"                        # std_srvs/Trigger: the controller ends its episode now; the sim arm
                                         # resets (new home pose and goal)
CONTROLLER_ENABLE = "controller/enable"
CONTROLLER_RESET = "controller/reset"
ARM_RESET = "arm/reset"                  # the sim arm's ~/reset (controller.reset_service calls it at each
                                         # episode's end)
