"""One config schema for nodes, CLI and tests.

`config/*.yaml` files are ROS 2 parameter files (`/**: ros__parameters: {section: {field: value}}`), so
`ros2 launch` can pass them to nodes unchanged; `load_config` reads the same file without ROS. Every field
below is a node parameter named `section.field`. Each field carries its rule (type, range, choices;
`config_rules`), checked whenever a section is built, and `Config` checks the relations between fields, so an
out-of-range value is refused with an error naming it before anything uses it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tdmpc_ros.config_rules import DEVICE, ROS_NAME, ConfigError, check_fields, checked, coerce, field_kind, require

# TD-MPC2's size presets (tdmpc2/common/__init__.py MODEL_SIZE) plus two small CPU presets.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "small": dict(enc_dim=128, mlp_dim=128, latent_dim=64, num_enc_layers=2, num_q=5),
    "medium": dict(enc_dim=256, mlp_dim=256, latent_dim=128, num_enc_layers=2, num_q=5),
    "1m": dict(enc_dim=256, mlp_dim=384, latent_dim=128, num_enc_layers=2, num_q=2),
    "5m": dict(enc_dim=256, mlp_dim=512, latent_dim=512, num_enc_layers=2, num_q=5),
    "19m": dict(enc_dim=1024, mlp_dim=1024, latent_dim=768, num_enc_layers=3, num_q=5),
    "48m": dict(enc_dim=1792, mlp_dim=1792, latent_dim=768, num_enc_layers=4, num_q=5),
    "317m": dict(enc_dim=4096, mlp_dim=4096, latent_dim=1376, num_enc_layers=5, num_q=8),
    # TD-MPC (v1, Hansen et al. 2022): its own architecture and losses (model/tdmpc1.py); "tdmpc1" has the
    # paper's sizes (latent 50, enc 256, mlp 512, two Q heads), "tdmpc1-small" the small preset's widths.
    "tdmpc1-small": dict(enc_dim=128, mlp_dim=128, latent_dim=64, num_enc_layers=2, num_q=2),
    "tdmpc1": dict(enc_dim=256, mlp_dim=512, latent_dim=50, num_enc_layers=2, num_q=2),
}
# TD-MPC v1's settings where they differ from TD-MPC2's; a tdmpc1-* preset applies them to every field still at
# TD-MPC2's default (section -> field -> value). Planner: horizon 5 and a 5 % policy-prior share; losses: MSE
# weights c1..c3 and its optimiser (one learning rate, clip 10); no dropout in its Q heads.
TDMPC1_DEFAULTS: dict[str, dict[str, object]] = {
    "model": dict(latent="plain", dropout=0.0),
    "planner": dict(horizon=5, num_pi_trajs=25),
    "agent": dict(consistency_coef=2.0, reward_coef=0.5, value_coef=0.1, lr=1e-3, enc_lr_scale=1.0,
                  grad_clip_norm=10.0),
}
BUNDLED_ROBOTS = ("kuka_iiwa", "panda", "xarm6")  # URDFs from pybullet_data (arm_description.py)
OUTPUTS = ("float64_multi_array", "joint_trajectory", "joint_state")
TASK_NAME = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?"  # reach | pkg.mod:Class
MAX_JOINTS = 64


class _Section:
    """Checks its fields' rules when built (a dataclass's __post_init__)."""

    section = ""

    def __post_init__(self) -> None:
        check_fields(self.section, self)


@dataclass
class ModelConfig(_Section):
    """World-model architecture (TD-MPC2 names). Size fields left at 0 come from `preset`."""

    section = "model"

    preset: str = checked("small", choices=tuple(MODEL_PRESETS))
    """Size preset: small, medium, 1m, 5m, 19m, 48m or 317m (TD-MPC2); tdmpc1-small or tdmpc1 (TD-MPC v1's
    architecture and losses, and TDMPC1_DEFAULTS for fields left at TD-MPC2's defaults)."""
    latent: str = checked("simnorm", choices=("simnorm", "fsq", "plain"))
    """Latent state: simnorm (TD-MPC2), fsq (DC-MPC's finite scalar quantised codes, dynamics a classifier
    over them) or plain (no normalisation, TD-MPC v1's; what the tdmpc1 presets use)."""
    fsq_levels: list[float] = checked([5.0, 3.0], ge=3, le=255, empty_ok=False)
    """fsq only: quantisation levels L_i of the channels of one latent group (DC-MPC's default b = 2 channels,
    L = [5, 3]: 15 codes per group); odd integers. latent_dim must be a multiple of their count."""
    obs_dim: int = checked(0, ge=0, le=1_000_000)
    """Observation size; 0 takes it from the task."""
    action_dim: int = checked(0, ge=0, le=64)
    """Action size; 0 takes it from the task (one per joint)."""
    latent_dim: int = checked(0, ge=0, le=65536)
    """Latent state size (a multiple of simnorm_dim)."""
    mlp_dim: int = checked(0, ge=0, le=65536)
    """Hidden width of dynamics, reward, termination, Q and policy MLPs."""
    enc_dim: int = checked(0, ge=0, le=65536)
    """Hidden width of the encoder."""
    num_enc_layers: int = checked(0, ge=0, le=32)
    """Encoder depth (hidden layers + 1)."""
    num_q: int = checked(0, ge=0, le=64)
    """Q-ensemble size."""
    simnorm_dim: int = checked(8, ge=2, le=1024)
    """SimNorm group size: the latent is a set of softmaxes over groups of this many entries."""
    num_bins: int = checked(101, ge=2, le=10001)
    """Two-hot bins for reward and value regression (symlog space)."""
    vmin: float = checked(-10.0)
    """Lowest bin (symlog space)."""
    vmax: float = checked(10.0)
    """Highest bin (symlog space)."""
    dropout: float = checked(0.01, ge=0.0, lt=1.0)
    """Dropout in the first layer of each Q head."""
    log_std_min: float = checked(-10.0)
    """Lower bound of the policy's log standard deviation."""
    log_std_max: float = checked(2.0)
    """Upper bound of the policy's log standard deviation."""
    episodic: bool = checked(True)
    """Learn a termination head (episodes end on success)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, value in MODEL_PRESETS[self.preset].items():
            if getattr(self, key) == 0:
                setattr(self, key, value)
        if self.tdmpc1:
            apply_tdmpc1_defaults(self)
            require(self.latent != "fsq", "model.latent: fsq is not part of TD-MPC v1 (model.preset "
                                          f"{self.preset}); use a TD-MPC2 preset with it")
        if self.latent == "simnorm":
            require(self.latent_dim % self.simnorm_dim == 0,
                    f"model.latent_dim {self.latent_dim} is not a multiple of model.simnorm_dim {self.simnorm_dim}")
        if self.latent == "fsq":
            require(all(v == int(v) and int(v) % 2 == 1 for v in self.fsq_levels),
                    f"model.fsq_levels {self.fsq_levels}: each level must be an odd integer")
            require(self.latent_dim % len(self.fsq_levels) == 0, f"model.latent_dim {self.latent_dim} is not a "
                    f"multiple of the {len(self.fsq_levels)} channels of model.fsq_levels")
        require(self.num_q >= 2, f"model.num_q: {self.num_q} is out of range; allowed: >= 2 (TD targets take "
                                 "the minimum of two heads)")
        require(self.num_enc_layers >= 1, f"model.num_enc_layers: {self.num_enc_layers} is out of range; allowed: >= 1")
        require(self.vmin < self.vmax, f"model.vmin {self.vmin:g} must be below model.vmax {self.vmax:g}")
        require(self.log_std_min < self.log_std_max,
                f"model.log_std_min {self.log_std_min:g} must be below model.log_std_max {self.log_std_max:g}")

    @property
    def tdmpc1(self) -> bool:
        """TD-MPC v1's architecture and losses (a tdmpc1-* preset)."""
        return self.preset.startswith("tdmpc1")


def apply_tdmpc1_defaults(section: _Section) -> None:
    """TDMPC1_DEFAULTS for `section`'s fields still at their (TD-MPC2) defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(section)}
    for key, value in TDMPC1_DEFAULTS[section.section].items():
        if getattr(section, key) == defaults[key]:
            setattr(section, key, value)


@dataclass
class PlannerConfig(_Section):
    """MPPI in latent space (TD-MPC2 defaults)."""

    section = "planner"

    mpc: bool = checked(True)
    """Act by MPPI planning (TD-MPC2's `mpc`); false: act with the policy prior alone (a sample while
    learning, its mean in eval mode), TD-MPC2's `mpc: false`, for tasks where the model's values rank plans
    worse than the prior does (docs/tasks.md, push). The prior runs in torch on either backend."""
    horizon: int = checked(3, ge=1, le=100)
    """Planning horizon; also the world model's training horizon."""
    iterations: int = checked(6, ge=1, le=1000)
    """MPPI refinement iterations per plan call."""
    num_samples: int = checked(512, ge=1, le=1_000_000)
    """Action sequences per iteration, policy-prior ones included."""
    num_elites: int = checked(64, ge=1)
    """Top sequences kept to refit the sampling distribution."""
    num_pi_trajs: int = checked(24, ge=0)
    """Sequences drawn from the policy prior."""
    min_std: float = checked(0.05, gt=0.0)
    """Lower clamp of the sampling std."""
    max_std: float = checked(2.0, gt=0.0)
    """Upper clamp (and initial value) of the sampling std."""
    temperature: float = checked(0.5, gt=0.0)
    """Softmax temperature over elite scores."""
    backend: str = checked("torch", choices=("torch", "onnx"))
    """torch or onnx."""
    device: str = checked("cpu", pattern=DEVICE)
    """cpu or cuda (torch device; onnx picks the CUDA provider when cuda)."""
    compile: bool = checked(True)
    """torch.compile the plan step where it pays (CPU: default mode; CUDA: CUDA graphs)."""
    threads: int = checked(1, ge=0, le=4096)
    """torch intra-op threads for the planner (1 in a node sharing the machine; 0 leaves torch's setting alone)."""


@dataclass
class AgentConfig(_Section):
    """TD-MPC2 losses and optimisation, with RLPD's update ratios."""

    section = "agent"

    batch_size: int = checked(256, ge=1, le=1_000_000)
    """Windows per update."""
    lr: float = checked(3e-4, gt=0.0, le=1.0)
    """Adam learning rate."""
    enc_lr_scale: float = checked(0.3, ge=0.0, le=100.0)
    """Encoder learning-rate multiplier."""
    grad_clip_norm: float = checked(20.0, gt=0.0)
    """Gradient-norm clip."""
    rho: float = checked(0.5, gt=0.0, le=1.0)
    """Per-step loss decay over the horizon."""
    consistency_coef: float = checked(20.0, ge=0.0)
    """Latent consistency loss weight."""
    reward_coef: float = checked(0.1, ge=0.0)
    """Reward cross-entropy weight."""
    value_coef: float = checked(0.1, ge=0.0)
    """Value cross-entropy weight."""
    termination_coef: float = checked(1.0, ge=0.0)
    """Termination BCE weight."""
    entropy_coef: float = checked(1e-4, ge=0.0)
    """Policy entropy bonus (scaled by action_dim inside the loss)."""
    tau: float = checked(0.01, gt=0.0, le=1.0)
    """Polyak rate of the target Q ensemble."""
    discount_denom: float = checked(5.0, gt=0.0)
    """Discount heuristic: gamma = (L/denom - 1)/(L/denom) for episode length L."""
    discount_min: float = checked(0.95, gt=0.0, lt=1.0)
    """Lower clamp of the discount."""
    discount_max: float = checked(0.995, gt=0.0, lt=1.0)
    """Upper clamp of the discount."""
    utd_ratio: float = checked(1.0, gt=0.0, le=1000.0)
    """Gradient updates per environment step collected (update-to-data ratio)."""
    critic_actor_ratio: int = checked(0, ge=0, le=1000)
    """Extra value-only updates for each full update (RLPD critic-to-actor ratio minus one)."""
    demo_ratio: float = checked(0.5, ge=0.0, le=1.0)
    """Share of each batch drawn from demonstrations (RLPD symmetric sampling: 0.5)."""
    bc_coef: float = checked(0.0, ge=0.0, le=1e4)
    """Behaviour cloning (MoDem, TD3+BC): weight of the squared error between the policy prior's mean action
    and the demo windows' actions, beside its scaled-Q objective (whose Q is scale-free, order 1); 0: off.
    It pulls the prior, and so the planner's prior trajectories, toward the demonstrator's actions."""
    buffer_capacity: int = checked(1_000_000, ge=1)
    """Online replay capacity in transitions (oldest evicted first; demos never are)."""
    seed: int = checked(1, ge=0, lt=2**32)
    """Seed for torch, numpy and sampling."""
    device: str = checked("cpu", pattern=DEVICE + "|auto")
    """Training device: cpu, cuda or auto."""
    decoder_coef: float = checked(0.0, ge=0.0, le=1e4)
    """Reconstruction auxiliary (Dreamer): weight of a decoder's latent -> observation MSE beside the
    consistency loss; 0 (TD-MPC2) builds no decoder."""
    model_rollouts: int = checked(0, ge=0, le=1_000_000)
    """MBPO-style branched rollouts: latent start states (replayed observations, encoded) rolled out under
    the policy prior per full update, their model transitions mixed into the Q and policy losses; 0: off."""
    model_rollout_horizon: int = checked(1, ge=1, le=100)
    """Steps k of each branched model rollout."""
    model_rollout_ratio: float = checked(0.5, ge=0.0, le=1.0)
    """Share of the Q and policy losses taken by model-rollout transitions (the rest: replayed data)."""
    compile: bool = checked(True)
    """torch.compile the training graphs (TD targets; world-model losses and policy terms, forward and
    backward): ~25% faster updates on CPU. The first update of a process compiles (about a minute with a cold
    inductor cache, seconds once cached); eager where compiling fails."""


@dataclass
class TaskConfig(_Section):
    """The task (tdmpc_ros/tasks/) and the delta-position action interface, shared by sim, controller and learner."""

    section = "task"

    name: str = checked("reach", empty_ok=False, pattern=TASK_NAME)
    """reach, push, or a user's task class as package.module:Class (docs/tasks.md)."""
    reward: str = checked("dense", choices=("dense", "sparse"))
    """dense: the task's shaping; sparse: 0 on a step within the goal, -1 otherwise."""

    robot: str = checked("kuka_iiwa", empty_ok=False)
    """The arm: a bundled name (kuka_iiwa, panda, xarm6: URDFs from pybullet_data), a path to a URDF file, or
    robot_description (nodes read the URDF from that topic). Joints, limits and home come from the URDF."""
    joint_names: list[str] = checked([], unique=True)
    """Controlled joints, in action order; empty: the movable joints of the chain from the URDF's root to
    ee_link, in chain order (filled in when the config is built)."""
    ee_link: str = checked("")
    """End-effector link for forward kinematics; empty: the bundled arm's, else the URDF's deepest link."""
    action_space: str = checked("joint", choices=("joint", "cartesian"))
    """joint: an action is a joint-position delta (action_scale rad per unit); cartesian: an end-effector
    position delta (x, y, z; cartesian_scale m per unit) turned into joint targets by IK. Both pass the same
    joint clips and the workspace box."""
    cartesian_scale: float = checked(0.02, gt=0.0, le=1.0)
    """cartesian: metres per tick for a full action: ee target = ee(last target) + clip(a,-1,1) * cartesian_scale."""
    hold_orientation: bool = checked(False)
    """cartesian: IK also keeps the end effector's orientation at the last target's (a tool that must stay
    pointing down, as in pushing); false: position only, the orientation free (reaches more of the workspace)."""
    workspace_low: list[float] = checked([-1.5, -1.5, 0.0], length=3, ge=-100.0, le=100.0)
    """Lower corner of the box (m, base frame) no commanded target may put the end effector outside of."""
    workspace_high: list[float] = checked([1.5, 1.5, 2.0], length=3, ge=-100.0, le=100.0)
    """Upper corner of the workspace box (m, base frame)."""
    control_rate_hz: float = checked(20.0, gt=0.0, le=10_000.0)
    """Control (and action) rate."""
    action_scale: float = checked(0.05, gt=0.0, le=math.pi)
    """Radians per tick for a full action: target = last_target + clip(a,-1,1) * action_scale."""
    joint_margin: float = checked(0.05, ge=0.0, le=math.pi)
    """Targets stay this far inside the URDF joint limits (rad)."""
    goal_low: list[float] = checked([0.35, -0.35, 0.25], length=3)
    """Lower corner of the goal box (m, base frame)."""
    goal_high: list[float] = checked([0.65, 0.35, 0.65], length=3)
    """Upper corner of the goal box (m, base frame)."""
    success_radius: float = checked(0.05, gt=0.0)
    """Success when the end effector is this close to the goal (m)."""
    success_hold_steps: int = checked(3, ge=1)
    """Consecutive in-radius steps that end an episode as a success."""
    max_episode_steps: int = checked(100, ge=1, le=10_000_000)
    """Truncation limit per episode."""
    base_frame: str = checked("", pattern=ROS_NAME)
    """Frame id that goals must carry; empty: the arm's base link (the URDF's root)."""
    object_size: float = checked(0.05, gt=0.0, le=1.0)
    """push: edge of the cube (m)."""
    object_start_low: list[float] = checked([0.54, -0.08], length=2, ge=-10.0, le=10.0)
    """push: lower corner of the cube's start area on the table (x, y; m, base frame)."""
    object_start_high: list[float] = checked([0.6, 0.08], length=2, ge=-10.0, le=10.0)
    """push: upper corner of the cube's start area on the table (x, y; m, base frame)."""
    ee_object_weight: float = checked(0.5, ge=0.0, le=100.0)
    """push, dense reward: weight of the end effector's distance to the cube (to its approach point)."""
    approach_offset: float = checked(0.0, ge=0.0, le=1.0)
    """push, dense reward: the end effector's term measures its distance to a point this far behind the cube's
    centre, on the table's line from the goal through the cube (m; 0: the centre). A push toward the goal
    starts there, so the reward leads the arm round the cube rather than to its nearest side."""
    object_goal_weight: float = checked(1.0, ge=0.0, le=100.0)
    """push, dense reward: weight of the cube's distance to the goal."""

    @property
    def obs_dim(self) -> int:
        from tdmpc_ros.tasks import make_task  # the task defines its observation

        return make_task(self).obs_dim

    @property
    def action_dim(self) -> int:
        return 3 if self.action_space == "cartesian" else len(self.joint_names)

    def __post_init__(self) -> None:
        super().__post_init__()
        from tdmpc_ros.arm_description import resolve_task  # joint names and end effector from the URDF

        resolve_task(self)


@dataclass
class SimConfig(_Section):
    """The embedded PyBullet arm."""

    section = "sim"

    physics_hz: float = checked(240.0, gt=0.0, le=100_000.0)
    """Physics step rate."""
    kp: float = checked(400.0, ge=0.0)
    """PD position gain (Nm/rad)."""
    kd: float = checked(40.0, ge=0.0)
    """PD velocity gain (Nm s/rad)."""
    max_effort: float = checked(200.0, gt=0.0)
    """Torque limit per joint (Nm)."""
    max_velocity: float = checked(2.0, gt=0.0)
    """Velocity limit per joint (rad/s)."""
    joint_state_rate_hz: float = checked(100.0, gt=0.0, le=100_000.0)
    """/joint_states publish rate in real-time mode."""
    lockstep: bool = checked(False)
    """Advance physics one control period per command received, instead of in real time."""
    home: list[float] = checked([])
    """Home joint positions (rad); empty: the arm's default (a bundled arm's ready pose, else mid-range of
    each joint, 0 for continuous ones; filled in when the config is built)."""
    home_noise: float = checked(0.1, ge=0.0, le=math.pi)
    """Uniform perturbation of the home pose at reset (rad)."""
    controller_name: str = checked("forward_position_controller", empty_ok=False, pattern=ROS_NAME)
    """ros2_control-style controller name: commands arrive on /<controller_name>/commands."""
    friction_range: list[float] = checked([0.0, 0.0], length=2, ge=0.0)
    """Domain randomisation: joint friction drawn per episode from this range (Nm)."""
    gain_scale_range: list[float] = checked([1.0, 1.0], length=2, gt=0.0)
    """Domain randomisation: PD gain multiplier drawn per episode."""
    latency_steps: int = checked(0, ge=0, le=1000)
    """Domain randomisation: actions applied this many control ticks late."""
    obs_noise: float = checked(0.0, ge=0.0)
    """Domain randomisation: Gaussian noise std on measured joint positions (rad)."""
    object_mass_range: list[float] = checked([0.2, 0.2], length=2, gt=0.0, le=100.0)
    """push, domain randomisation: the cube's mass drawn per episode from this range (kg)."""
    object_friction_range: list[float] = checked([0.5, 0.5], length=2, ge=0.0, le=10.0)
    """push, domain randomisation: the cube's lateral friction coefficient drawn per episode."""
    seed: int = checked(0, ge=0, lt=2**32)
    """Seed for goals, home perturbation and randomisation."""


@dataclass
class ControllerConfig(_Section):
    """The MPPI controller node."""

    section = "controller"

    max_tracking_error: float = checked(0.2, gt=0.0, le=math.pi)
    """Targets stay within this distance of the measured joint positions (rad)."""
    state_timeout: float = checked(0.25, gt=0.0)
    """Joint states older than this are stale: hold (s)."""
    output: str = checked("float64_multi_array", choices=OUTPUTS)
    """Command type: float64_multi_array (forward_command_controller), joint_trajectory or joint_state (Isaac Sim)."""
    command_topic: str = checked("", pattern=ROS_NAME)
    """Command topic; empty picks the convention's default for the chosen output."""
    plan_budget: float = checked(0.75, gt=0.0, le=1.0)
    """Share of the control period after a tick's start at which its command goes out (real time); a plan not
    ready by then gives way to the policy prior's action. The rest of the period publishes the transition."""
    exploration_noise: float = checked(0.0, ge=0.0, le=10.0)
    """Gaussian noise std added to actions for online data collection."""
    lockstep_max_backlog: int = checked(50, ge=0)
    """Lockstep only: hold the world while the learner owes updates for more than this many env steps (0:
    never), so the arm waits for learning as `bench learn` does; without a learner nothing waits."""
    thread_priority: int = checked(50, ge=0, le=99)
    """SCHED_FIFO priority of the ticking thread in real time (ros2_control's default 50; 0: normal). Planning
    and model loading stay at normal priority. Without CAP_SYS_NICE or an rtprio limit it warns and runs
    normal."""
    model_path: str = checked("")
    """Checkpoint to start from; empty runs the untrained prior-free hold until a model arrives."""
    eval_mode: bool = checked(False)
    """Deterministic planner output (no elite sampling, no noise)."""
    max_checkpoint_bytes: int = checked(8 * 1024**3, ge=1)
    """Largest checkpoint file a node will read (checked with stat before reading; the 317m preset with its
    optimiser state is about 5 GB)."""
    seed: int = checked(1, ge=0, lt=2**32)
    """Seed of the controller's exploration-noise draws."""
    reset_service: str = checked("arm/reset", pattern=ROS_NAME)
    """std_srvs/Trigger service the controller calls at each episode's end for a new pose and goal (the sim
    arm's `~/reset`); empty: none, the next episode starts at once on the same goal (a real arm)."""
    weights_timeout_s: float = checked(30.0, gt=0.0)
    """A model arriving over model_weights whose pieces are not all in after this long is dropped (s)."""
    markers_hz: float = checked(2.0, ge=0.0, le=100.0)
    """Rate of the RViz markers on ~/markers (goal, workspace box, current target, the plan's end-effector path;
    built off the tick); 0: none."""


@dataclass
class LearnerConfig(_Section):
    """The online learner node and `tdmpc-ros train`."""

    section = "learner"

    run_dir: str = checked("runs/arm", empty_ok=False)
    """Folder for online bags, checkpoints, metrics and plots."""
    demos: list[str] = checked(["demos"])
    """Demo bag directories (each may hold many bags)."""
    pretrain_updates: int = checked(500, ge=0)
    """Demo-only updates before online data arrives."""
    publish_every: int = checked(500, ge=1)
    """Write a checkpoint and publish a model update every this many updates."""
    keep_checkpoints: int = checked(3, ge=1)
    """Checkpoints kept in run_dir (older ones deleted)."""
    bag_max_bytes: int = checked(64 * 1024 * 1024, ge=4096)
    """Online bag file size before a new one is started."""
    log_every_s: float = checked(5.0, gt=0.0)
    """Progress log period (s)."""
    max_open_episodes: int = checked(64, ge=1)
    """Live episodes the learner assembles at once; beyond it the oldest is closed as cut short."""
    open_episode_timeout_s: float = checked(120.0, gt=0.0)
    """An episode with no new transition for this long is closed as cut short (s)."""
    weights_transport: str = checked("dds", choices=("dds", "file"))
    """How new models reach controllers: dds (the checkpoint's bytes on model_weights, so a controller on
    another machine needs nothing of this one's filesystem) or file (only the path, one machine)."""
    weights_chunk_bytes: int = checked(4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    """Largest piece of a model in one model_weights message (bigger models go in several)."""
    arms: list[str] = checked([], pattern=ROS_NAME)
    """A fleet: the namespaces of the arms whose `<arm>/transitions` the learner takes (relative to its own
    namespace, e.g. [arm0, arm1]), each arm's episodes kept apart; empty: its own `transitions` (one arm)."""
    discover_arms: bool = checked(False)
    """Also take every `<ns>/transitions` (tdmpc_ros/msg/Transition) that appears on the graph, checked each
    second: arms started later, or on other machines, without listing them."""


@dataclass
class Config:
    """Everything, by section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)

    def __post_init__(self) -> None:
        if self.model.obs_dim == 0:
            self.model.obs_dim = self.task.obs_dim
        if self.model.action_dim == 0:
            self.model.action_dim = self.task.action_dim
        if not self.sim.home and self.task.robot != "robot_description":
            from tdmpc_ros.arm_description import describe_task

            try:
                self.sim.home = list(describe_task(self.task).home)
            except ConfigError:
                pass  # joint names of no chain of this URDF (a model-only config): the sim arm refuses them
        if self.model.tdmpc1:
            apply_tdmpc1_defaults(self.planner)
            apply_tdmpc1_defaults(self.agent)
        check_relations(self)

    @property
    def discount(self) -> float:
        """TD-MPC2's episode-length heuristic."""
        frac = self.task.max_episode_steps / self.agent.discount_denom
        return min(max((frac - 1) / frac, self.agent.discount_min), self.agent.discount_max)


SECTION_CLASSES: dict[str, type] = {
    "model": ModelConfig, "planner": PlannerConfig, "agent": AgentConfig, "task": TaskConfig,
    "sim": SimConfig, "controller": ControllerConfig, "learner": LearnerConfig,
}


def check_relations(cfg: Config) -> None:
    """Relations between fields, each error naming the fields and their values (the fields themselves were
    checked when their sections were built). sim.home's length is the simulator's to check (sim/arm.py): a
    real arm's config need not describe a simulated one."""
    model, planner, agent, task, sim = cfg.model, cfg.planner, cfg.agent, cfg.task, cfg.sim
    joints = len(task.joint_names)
    require(joints <= MAX_JOINTS, f"task.joint_names: {joints} joints, at most {MAX_JOINTS}")
    require(model.action_dim == task.action_dim,
            f"model.action_dim {model.action_dim} != task action size {task.action_dim} (task.joint_names, "
            f"task.action_space {task.action_space})")
    require(planner.num_elites <= planner.num_samples,
            f"planner.num_elites {planner.num_elites} exceeds planner.num_samples {planner.num_samples}")
    require(planner.num_pi_trajs <= planner.num_samples,
            f"planner.num_pi_trajs {planner.num_pi_trajs} exceeds planner.num_samples {planner.num_samples}")
    require(planner.min_std <= planner.max_std,
            f"planner.min_std {planner.min_std:g} exceeds planner.max_std {planner.max_std:g}")
    require(agent.discount_min <= agent.discount_max,
            f"agent.discount_min {agent.discount_min:g} exceeds agent.discount_max {agent.discount_max:g}")
    for low, high, name in ((task.goal_low, task.goal_high, "task.goal_low/goal_high"),
                            (sim.friction_range[:1], sim.friction_range[1:], "sim.friction_range"),
                            (sim.gain_scale_range[:1], sim.gain_scale_range[1:], "sim.gain_scale_range"),
                            (task.object_start_low, task.object_start_high, "task.object_start_low/high"),
                            (sim.object_mass_range[:1], sim.object_mass_range[1:], "sim.object_mass_range"),
                            (sim.object_friction_range[:1], sim.object_friction_range[1:],
                             "sim.object_friction_range")):
        require(all(lo <= hi for lo, hi in zip(low, high)), f"{name}: low {low} above high {high}")
    require(all(w_lo <= lo and hi <= w_hi for w_lo, lo, hi, w_hi in
                zip(task.workspace_low, task.goal_low, task.goal_high, task.workspace_high)),
            f"task.goal_low/goal_high {task.goal_low}/{task.goal_high} reach outside the workspace box "
            f"task.workspace_low/workspace_high {task.workspace_low}/{task.workspace_high}")
    require(task.success_hold_steps <= task.max_episode_steps,
            f"task.success_hold_steps {task.success_hold_steps} exceeds task.max_episode_steps "
            f"{task.max_episode_steps}: no episode could succeed")


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a Config from nested {section: {field: value}}; unknown keys and values that break a field's rule
    are errors that name them."""
    classes = SECTION_CLASSES
    if not isinstance(data or {}, dict):
        raise ConfigError(f"expected {{section: {{field: value}}}}, got {type(data).__name__}")
    sections = {}
    for name, values in (data or {}).items():
        if name not in classes:
            raise ConfigError(f"unknown config section {name!r}; sections are {sorted(classes)}")
        values = values or {}
        if not isinstance(values, dict):
            raise ConfigError(f"section {name!r}: expected field: value pairs, got {values!r}")
        kinds = {f.name: field_kind(f) for f in dataclasses.fields(classes[name])}
        unknown = set(values) - set(kinds)
        if unknown:
            raise ConfigError(f"unknown field(s) {sorted(map(str, unknown))} in section {name!r}")
        sections[name] = classes[name](**{
            key: coerce(value, kinds[key]) for key, value in values.items()})
    return Config(**sections)


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)


def config_yaml(cfg: Config) -> str:
    """The resolved config as a ROS 2 parameter file, which `load_config` and `--params-file` read back."""
    return yaml.safe_dump({"/**": {"ros__parameters": config_to_dict(cfg)}}, sort_keys=False)


def flatten(cfg: Config) -> dict[str, Any]:
    """{'section.field': value} — the node parameter names."""
    return {f"{s}.{k}": v for s, fields_ in config_to_dict(cfg).items() for k, v in fields_.items()}


def unflatten(flat: dict[str, Any]) -> Config:
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        nested.setdefault(section, {})[name] = value
    return config_from_dict(nested)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Nested config dict from a plain or ROS-parameter YAML file (any node-name key, `ros__parameters`)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    for node_params in data.values() if isinstance(data, dict) else []:
        if isinstance(node_params, dict) and "ros__parameters" in node_params:
            return node_params["ros__parameters"] or {}
    return data


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in overrides.items():
        out.setdefault(section, {}).update(values)
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Config from a YAML file (or defaults) with nested overrides applied, e.g. {'model': {'preset': '5m'}}."""
    data = read_yaml(path) if path else {}
    try:
        return config_from_dict(merge(data, overrides or {}))
    except ConfigError as exc:
        raise ConfigError(f"{path or 'defaults'}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"{path or 'defaults'}: {exc}") from exc


def default_config_path() -> Path:
    """config/arm.yaml from the source tree or the installed share/tdmpc_ros."""
    here = Path(__file__).resolve().parent.parent / "config" / "arm.yaml"
    if here.exists():
        return here
    import sys

    return Path(sys.prefix) / "share" / "tdmpc_ros" / "config" / "arm.yaml"
