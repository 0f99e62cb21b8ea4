"""One config schema for nodes, CLI and tests.

`config/*.yaml` files are ROS 2 parameter files (`/**: ros__parameters: {section: {field: value}}`), so
`ros2 launch` can pass them to nodes unchanged; `load_config` reads the same file without ROS. Every field
below is a node parameter named `section.field`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# TD-MPC2's size presets (tdmpc2/common/__init__.py MODEL_SIZE) plus two small CPU presets.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "small": dict(enc_dim=128, mlp_dim=128, latent_dim=64, num_enc_layers=2, num_q=5),
    "medium": dict(enc_dim=256, mlp_dim=256, latent_dim=128, num_enc_layers=2, num_q=5),
    "1m": dict(enc_dim=256, mlp_dim=384, latent_dim=128, num_enc_layers=2, num_q=2),
    "5m": dict(enc_dim=256, mlp_dim=512, latent_dim=512, num_enc_layers=2, num_q=5),
    "19m": dict(enc_dim=1024, mlp_dim=1024, latent_dim=768, num_enc_layers=3, num_q=5),
    "48m": dict(enc_dim=1792, mlp_dim=1792, latent_dim=768, num_enc_layers=4, num_q=5),
    "317m": dict(enc_dim=4096, mlp_dim=4096, latent_dim=1376, num_enc_layers=5, num_q=8),
}


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclass
class ModelConfig:
    """World-model architecture (TD-MPC2 names). Size fields left at 0 come from `preset`."""

    preset: str = "small"
    """Size preset: small, medium, 1m, 5m, 19m, 48m or 317m."""
    obs_dim: int = 0
    """Observation size; 0 takes it from the task."""
    action_dim: int = 0
    """Action size; 0 takes it from the task (one per joint)."""
    latent_dim: int = 0
    """Latent state size (a multiple of simnorm_dim)."""
    mlp_dim: int = 0
    """Hidden width of dynamics, reward, termination, Q and policy MLPs."""
    enc_dim: int = 0
    """Hidden width of the encoder."""
    num_enc_layers: int = 0
    """Encoder depth (hidden layers + 1)."""
    num_q: int = 0
    """Q-ensemble size."""
    simnorm_dim: int = 8
    """SimNorm group size: the latent is a set of softmaxes over groups of this many entries."""
    num_bins: int = 101
    """Two-hot bins for reward and value regression (symlog space)."""
    vmin: float = -10.0
    """Lowest bin (symlog space)."""
    vmax: float = 10.0
    """Highest bin (symlog space)."""
    dropout: float = 0.01
    """Dropout in the first layer of each Q head."""
    log_std_min: float = -10.0
    """Lower bound of the policy's log standard deviation."""
    log_std_max: float = 2.0
    """Upper bound of the policy's log standard deviation."""
    episodic: bool = True
    """Learn a termination head (episodes end on success)."""

    def __post_init__(self) -> None:
        if self.preset not in MODEL_PRESETS:
            raise ConfigError(f"model.preset: unknown preset {self.preset!r}; choose from {sorted(MODEL_PRESETS)}")
        for key, value in MODEL_PRESETS[self.preset].items():
            if getattr(self, key) == 0:
                setattr(self, key, value)
        if self.latent_dim % self.simnorm_dim:
            raise ConfigError(f"model.latent_dim {self.latent_dim} is not a multiple of simnorm_dim {self.simnorm_dim}")


@dataclass
class PlannerConfig:
    """MPPI in latent space (TD-MPC2 defaults)."""

    horizon: int = 3
    """Planning horizon; also the world model's training horizon."""
    iterations: int = 6
    """MPPI refinement iterations per plan call."""
    num_samples: int = 512
    """Action sequences per iteration, policy-prior ones included."""
    num_elites: int = 64
    """Top sequences kept to refit the sampling distribution."""
    num_pi_trajs: int = 24
    """Sequences drawn from the policy prior."""
    min_std: float = 0.05
    """Lower clamp of the sampling std."""
    max_std: float = 2.0
    """Upper clamp (and initial value) of the sampling std."""
    temperature: float = 0.5
    """Softmax temperature over elite scores."""
    backend: str = "torch"
    """torch or onnx."""
    device: str = "cpu"
    """cpu or cuda (torch device; onnx picks the CUDA provider when cuda)."""
    compile: bool = True
    """torch.compile the plan step where it pays (CPU: default mode; CUDA: CUDA graphs)."""
    threads: int = 1
    """torch intra-op threads for the planner (1 in a node sharing the machine; 0 leaves torch's setting alone)."""


@dataclass
class AgentConfig:
    """TD-MPC2 losses and optimisation, with RLPD's update ratios."""

    batch_size: int = 256
    """Windows per update."""
    lr: float = 3e-4
    """Adam learning rate."""
    enc_lr_scale: float = 0.3
    """Encoder learning-rate multiplier."""
    grad_clip_norm: float = 20.0
    """Gradient-norm clip."""
    rho: float = 0.5
    """Per-step loss decay over the horizon."""
    consistency_coef: float = 20.0
    """Latent consistency loss weight."""
    reward_coef: float = 0.1
    """Reward cross-entropy weight."""
    value_coef: float = 0.1
    """Value cross-entropy weight."""
    termination_coef: float = 1.0
    """Termination BCE weight."""
    entropy_coef: float = 1e-4
    """Policy entropy bonus (scaled by action_dim inside the loss)."""
    tau: float = 0.01
    """Polyak rate of the target Q ensemble."""
    discount_denom: float = 5.0
    """Discount heuristic: gamma = (L/denom - 1)/(L/denom) for episode length L."""
    discount_min: float = 0.95
    """Lower clamp of the discount."""
    discount_max: float = 0.995
    """Upper clamp of the discount."""
    utd_ratio: float = 1.0
    """Gradient updates per environment step collected (update-to-data ratio)."""
    critic_actor_ratio: int = 0
    """Extra value-only updates for each full update (RLPD critic-to-actor ratio minus one)."""
    demo_ratio: float = 0.5
    """Share of each batch drawn from demonstrations (RLPD symmetric sampling: 0.5)."""
    buffer_capacity: int = 1_000_000
    """Online replay capacity in transitions (oldest evicted first; demos never are)."""
    seed: int = 1
    """Seed for torch, numpy and sampling."""
    device: str = "cpu"
    """Training device: cpu, cuda or auto."""
    compile: bool = True
    """torch.compile the training graphs (TD targets; world-model losses and policy terms, forward and
    backward): ~25% faster updates on CPU. The first update of a process compiles (about a minute with a cold
    inductor cache, seconds once cached); eager where compiling fails."""


@dataclass
class TaskConfig:
    """The reach task and the delta-position action interface, shared by sim, controller and learner."""

    robot: str = "kuka_iiwa"
    """kuka_iiwa or panda (URDFs from pybullet_data)."""
    joint_names: list[str] = field(default_factory=lambda: [f"lbr_iiwa_joint_{i}" for i in range(1, 8)])
    """Controlled joints, in action order."""
    ee_link: str = "lbr_iiwa_link_7"
    """End-effector link for forward kinematics."""
    control_rate_hz: float = 20.0
    """Control (and action) rate."""
    action_scale: float = 0.05
    """Radians per tick for a full action: target = last_target + clip(a,-1,1) * action_scale."""
    joint_margin: float = 0.05
    """Targets stay this far inside the URDF joint limits (rad)."""
    goal_low: list[float] = field(default_factory=lambda: [0.35, -0.35, 0.25])
    """Lower corner of the goal box (m, base frame)."""
    goal_high: list[float] = field(default_factory=lambda: [0.65, 0.35, 0.65])
    """Upper corner of the goal box (m, base frame)."""
    success_radius: float = 0.05
    """Success when the end effector is this close to the goal (m)."""
    success_hold_steps: int = 3
    """Consecutive in-radius steps that end an episode as a success."""
    max_episode_steps: int = 100
    """Truncation limit per episode."""
    base_frame: str = ""
    """Frame id that goals must carry; empty: the arm's base link (the URDF's root)."""

    @property
    def obs_dim(self) -> int:
        # q, qd, end effector, goal, goal - end effector
        return 2 * len(self.joint_names) + 9

    @property
    def action_dim(self) -> int:
        return len(self.joint_names)


@dataclass
class SimConfig:
    """The embedded PyBullet arm."""

    physics_hz: float = 240.0
    """Physics step rate."""
    kp: float = 400.0
    """PD position gain (Nm/rad)."""
    kd: float = 40.0
    """PD velocity gain (Nm s/rad)."""
    max_effort: float = 200.0
    """Torque limit per joint (Nm)."""
    max_velocity: float = 2.0
    """Velocity limit per joint (rad/s)."""
    joint_state_rate_hz: float = 100.0
    """/joint_states publish rate in real-time mode."""
    lockstep: bool = False
    """Advance physics one control period per command received, instead of in real time."""
    home: list[float] = field(default_factory=lambda: [0.0, 0.4, 0.0, -1.2, 0.0, 1.0, 0.0])
    """Home joint positions (rad)."""
    home_noise: float = 0.1
    """Uniform perturbation of the home pose at reset (rad)."""
    controller_name: str = "forward_position_controller"
    """ros2_control-style controller name: commands arrive on /<controller_name>/commands."""
    friction_range: list[float] = field(default_factory=lambda: [0.0, 0.0])
    """Domain randomisation: joint friction drawn per episode from this range (Nm)."""
    gain_scale_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    """Domain randomisation: PD gain multiplier drawn per episode."""
    latency_steps: int = 0
    """Domain randomisation: actions applied this many control ticks late."""
    obs_noise: float = 0.0
    """Domain randomisation: Gaussian noise std on measured joint positions (rad)."""
    seed: int = 0
    """Seed for goals, home perturbation and randomisation."""


@dataclass
class ControllerConfig:
    """The MPPI controller node."""

    max_tracking_error: float = 0.2
    """Targets stay within this distance of the measured joint positions (rad)."""
    state_timeout: float = 0.25
    """Joint states older than this are stale: hold (s)."""
    output: str = "float64_multi_array"
    """Command type: float64_multi_array (forward_command_controller), joint_trajectory or joint_state (Isaac Sim)."""
    command_topic: str = ""
    """Command topic; empty picks the convention's default for the chosen output."""
    plan_budget: float = 0.75
    """Share of the control period after a tick's start at which its command goes out (real time); a plan not
    ready by then gives way to the policy prior's action. The rest of the period publishes the transition."""
    exploration_noise: float = 0.0
    """Gaussian noise std added to actions for online data collection."""
    lockstep_max_backlog: int = 50
    """Lockstep only: hold the world while the learner owes updates for more than this many env steps (0:
    never), so the arm waits for learning as `bench learn` does; without a learner nothing waits."""
    thread_priority: int = 50
    """SCHED_FIFO priority of the ticking thread in real time (ros2_control's default 50; 0: normal). Planning
    and model loading stay at normal priority. Without CAP_SYS_NICE or an rtprio limit it warns and runs
    normal."""
    model_path: str = ""
    """Checkpoint to start from; empty runs the untrained prior-free hold until a model arrives."""
    eval_mode: bool = False
    """Deterministic planner output (no elite sampling, no noise)."""
    max_checkpoint_bytes: int = 8 * 1024**3
    """Largest checkpoint file a node will read (checked with stat before reading; the 317m preset with its
    optimiser state is about 5 GB)."""


@dataclass
class LearnerConfig:
    """The online learner node and `tdmpc-ros train`."""

    run_dir: str = "runs/arm"
    """Folder for online bags, checkpoints, metrics and plots."""
    demos: list[str] = field(default_factory=lambda: ["demos"])
    """Demo bag directories (each may hold many bags)."""
    pretrain_updates: int = 500
    """Demo-only updates before online data arrives."""
    publish_every: int = 500
    """Write a checkpoint and publish a model update every this many updates."""
    keep_checkpoints: int = 3
    """Checkpoints kept in run_dir (older ones deleted)."""
    bag_max_bytes: int = 64 * 1024 * 1024
    """Online bag file size before a new one is started."""
    log_every_s: float = 5.0
    """Progress log period (s)."""
    max_open_episodes: int = 64
    """Live episodes the learner assembles at once; beyond it the oldest is closed as cut short."""
    open_episode_timeout_s: float = 120.0
    """An episode with no new transition for this long is closed as cut short (s)."""


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
        if self.model.action_dim != self.task.action_dim:
            raise ConfigError(
                f"model.action_dim {self.model.action_dim} != task joint count {self.task.action_dim}")

    @property
    def discount(self) -> float:
        """TD-MPC2's episode-length heuristic."""
        frac = self.task.max_episode_steps / self.agent.discount_denom
        return min(max((frac - 1) / frac, self.agent.discount_min), self.agent.discount_max)


SECTION_CLASSES: dict[str, type] = {
    "model": ModelConfig, "planner": PlannerConfig, "agent": AgentConfig, "task": TaskConfig,
    "sim": SimConfig, "controller": ControllerConfig, "learner": LearnerConfig,
}


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a Config from nested {section: {field: value}}; unknown keys are errors that name them."""
    classes = SECTION_CLASSES
    sections = {}
    for name, values in (data or {}).items():
        if name not in classes:
            raise ConfigError(f"unknown config section {name!r}; sections are {sorted(classes)}")
        known = {f.name for f in dataclasses.fields(classes[name])}
        unknown = set(values or {}) - known
        if unknown:
            raise ConfigError(f"unknown field(s) {sorted(unknown)} in section {name!r}")
        defaults = classes[name]()
        sections[name] = classes[name](**{
            key: _coerce(f"{name}.{key}", value, getattr(defaults, key)) for key, value in (values or {}).items()})
    return Config(**sections)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Match YAML/ROS parameter values to the schema's types (1 -> 1.0 for a float field, tuples -> lists)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        item = type(default[0]) if default else None
        return [float(v) if item is float else v for v in value]
    if type(default) is not type(value) and not (isinstance(default, int) and isinstance(value, int)):
        raise ConfigError(f"{name}: expected {type(default).__name__}, got {value!r}")
    return value


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)


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
