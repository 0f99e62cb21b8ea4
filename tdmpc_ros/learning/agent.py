"""The TD-MPC2 agent's learning side: one update = world-model losses, then the policy, then the target.

Batches are time-major as TD-MPC2's: obs [H+1,B,obs_dim], action [H,B,A], reward [H,B,1] and terminated
[H,B,1] (1.0 where the episode ended by success at that step), and optionally demo [B] (1.0 on a demo window,
learning/replay.py), which the policy's behaviour-cloning term (`agent.bc_coef`) needs. RLPD's
critic-to-actor ratio adds value-only updates between full ones (`train_step`).

Variants (docs/variants.md): the model's own losses (`WorldModel.consistency`, `regression_loss`: DC-MPC's code
cross-entropy, TD-MPC v1's MSE heads), Dreamer's reconstruction (`agent.decoder_coef`, model/decoder.py) and
MBPO's branched model rollouts in the Q and policy updates (`agent.model_rollouts`, learning/model_rollouts.py).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from tdmpc_ros.config import AgentConfig, Config
from tdmpc_ros.model import WorldModel
from tdmpc_ros.model.decoder import Decoder, reconstruction_loss
from tdmpc_ros.model.kernels import CompiledOrEager, keep_freed_memory_mapped
from tdmpc_ros.learning.model_rollouts import ModelData, branched_rollouts, model_value_loss

Batch = dict[str, torch.Tensor]
BATCH_KEYS = ("obs", "action", "reward", "terminated")
LOSS_KEYS = ("consistency_loss", "reward_loss", "value_loss", "termination_loss", "decoder_loss",
             "model_value_loss", "pi_loss", "bc_loss", "total_loss", "grad_norm", "pi_scale")


class RunningScale:
    """Running 5th-95th percentile range of Q values (at least 1): keeps the policy loss scale-free."""

    def __init__(self, tau: float, device: torch.device):
        self.tau = tau
        self.value = torch.ones(1, device=device)
        self._quantiles = torch.tensor([0.05, 0.95], device=device)

    def update(self, x: torch.Tensor) -> None:
        lo, hi = torch.quantile(x.detach().reshape(x.shape[0], -1), self._quantiles, dim=0)
        self.value.lerp_(torch.clamp(hi - lo, min=1.0), self.tau)


@torch.no_grad()
def td_targets(model: WorldModel, next_obs: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
               discount: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded next observations, and TD targets r + gamma (1 - terminated) min of two random target heads
    at the policy's next action. A function of the model (not an Agent method), so one compiled graph serves
    every agent of the same shapes."""
    next_z = model.encode(next_obs)
    action, _ = model.pi(next_z)
    q = model.Q(next_z, action, "min", target=True)
    return next_z, reward + discount * (1.0 - terminated) * q


def rho_weights(rho: float, steps: int, device: torch.device) -> torch.Tensor:
    """TD-MPC2's per-step loss weights rho^t."""
    return rho ** torch.arange(steps, device=device, dtype=torch.float32)


def rollout(model: WorldModel, obs0: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents [H+1, B, latent]: the encoded first observation, then the dynamics under the actions; and the
    dynamics head's outputs [H, B, .] (the predicted latents, or fsq's code logits) for the consistency loss."""
    z = model.encode(obs0)
    zs, outs = [z], []
    for a in action.unbind(0):
        out = model.dynamics(z, a)
        z = model.sample_next(out)
        zs.append(z)
        outs.append(out)
    return torch.stack(zs), torch.stack(outs)


def value_loss(model: WorldModel, zs: torch.Tensor, action: torch.Tensor, td: torch.Tensor,
               rho: torch.Tensor) -> torch.Tensor:
    """Every head's regression loss against the TD target, rho-weighted over steps, averaged over heads."""
    qs = model.Q(zs, action, "all")  # [num_q, H, B, bins or 1]
    per_step = model.regression_loss(qs, td).mean(dim=(2, 3)).sum(0)  # [H]
    return (per_step * rho).sum() / (len(rho) * qs.shape[0])


def world_model_losses(model: WorldModel, cfg: AgentConfig, obs: torch.Tensor, action: torch.Tensor,
                       reward: torch.Tensor, terminated: torch.Tensor, next_z: torch.Tensor, td: torch.Tensor,
                       decoder: Decoder | None = None, model_data: ModelData | None = None):
    """World-model losses on one batch, given its TD targets -> (total, [consistency, reward, value,
    termination, decoder, model value], latents). A function of the model, so one compiled graph (forward and
    backward) serves every agent of the same shapes."""
    horizon = action.shape[0]
    rho = rho_weights(cfg.rho, horizon, obs.device)
    # Latent rollout
    zs, outs = rollout(model, obs[0], action)
    # Compute losses: consistency against the encoded next observations, then the heads' predictions
    consistency = (model.consistency(outs, next_z).mean(1) * rho).sum() / horizon
    reward_loss = (model.regression_loss(model.reward(zs[:-1], action), reward).mean(dim=(1, 2)) * rho).sum() / horizon
    values = value_loss(model, zs[:-1], action, td, rho)
    if model._termination is not None:
        termination_loss = F.binary_cross_entropy_with_logits(model.termination(zs[1:], unnormalized=True),
                                                              terminated)
    else:
        termination_loss = zs.new_zeros(())
    # Dreamer's reconstruction of every observation from the rollout's latents
    decoded = (reconstruction_loss(decoder, zs, obs, rho_weights(cfg.rho, horizon + 1, obs.device))
               if decoder is not None else zs.new_zeros(()))
    # MBPO: the Q heads also fit the model's branched transitions, at model_rollout_ratio of the value loss
    if model_data is not None:
        model_values = model_value_loss(model, model_data)
        value_term = (1.0 - cfg.model_rollout_ratio) * values + cfg.model_rollout_ratio * model_values
    else:
        model_values, value_term = zs.new_zeros(()), values
    total = (cfg.consistency_coef * consistency + cfg.reward_coef * reward_loss + cfg.value_coef * value_term
             + cfg.termination_coef * termination_loss + cfg.decoder_coef * decoded)
    return total, torch.stack([consistency, reward_loss, values, termination_loss, decoded, model_values]), zs


def policy_terms(model: WorldModel, zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q (mean of two heads) of the policy's actions at zs, their scaled entropy, and the policy's mean action."""
    action, info = model.pi(zs)
    return model.Q(zs, action, "avg"), info["scaled_entropy"], info["mean"]


def bc_loss(mean_action: torch.Tensor, action: torch.Tensor, demo: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning on the demo windows: squared error of the policy's mean action [H,B,A] to the demo's
    action, averaged over actions and demo windows, rho-weighted over steps; 0 with no demo window."""
    per_window = (mean_action - action).pow(2).mean(-1)  # [H, B]
    per_step = (per_window * demo).sum(1) / demo.sum().clamp(min=1.0)
    return (per_step * rho).mean()


class Agent:
    """World model, its two Adam optimisers and the policy-loss scale; `train_step` is the entry point."""

    def __init__(self, cfg: Config, device: str | torch.device = "cpu"):
        torch.manual_seed(cfg.agent.seed)
        self.cfg = cfg
        self.device = torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory_mapped()
        self.discount = torch.tensor(cfg.discount, device=self.device)  # a tensor: compiled code takes any value
        self.model = WorldModel(cfg.model).to(self.device).eval()
        a, m = cfg.agent, self.model
        self.decoder = Decoder(cfg.model).to(self.device) if a.decoder_coef > 0 else None
        critic = [{"params": m._encoder.parameters(), "lr": a.lr * a.enc_lr_scale},
                  {"params": list(m._dynamics.parameters()) + list(m._reward.parameters())
                   + (list(m._termination.parameters()) if m._termination is not None else [])
                   + (list(self.decoder.parameters()) if self.decoder is not None else [])},
                  {"params": m._qs.parameters()}]
        self.optim = torch.optim.Adam(critic, lr=a.lr, fused=True)
        self.pi_optim = torch.optim.Adam(m._pi.parameters(), lr=a.lr, eps=1e-5, fused=True)
        self._critic_params = [p for group in self.optim.param_groups for p in group["params"]]
        self._q_params = list(m._qs.parameters())
        self._pi_params = list(m._pi.parameters())
        self.scale = RunningScale(a.tau, self.device)

        def compiled(fn, **options):
            return CompiledOrEager(fn, **options) if a.compile else fn

        self._td_targets = compiled(td_targets)
        # Forward and backward compiled together; the backward keeps eager autograd's saved activations.
        # Static shapes (a graph per batch shape): torch 2.13's dynamic-shape tracing fails on these regions.
        self._world_model_losses = compiled(world_model_losses, keep_activations=True, dynamic=False)
        self._policy_terms = compiled(policy_terms, keep_activations=True, dynamic=False)
        self.updates = 0

    # -- batches -----------------------------------------------------------------------------------------
    def _unpack(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"batch is missing {missing}; expected keys {BATCH_KEYS}")
        obs, action, reward, terminated = (batch[k].to(self.device, torch.float32) for k in BATCH_KEYS)
        horizon = action.shape[0]
        if obs.shape[0] != horizon + 1 or reward.shape[:2] != action.shape[:2] or terminated.shape != reward.shape:
            raise ValueError(f"batch shapes do not fit obs [H+1,B,obs], action/reward/terminated [H,B,.]: obs "
                             f"{tuple(obs.shape)}, action {tuple(action.shape)}, reward {tuple(reward.shape)}, "
                             f"terminated {tuple(terminated.shape)}")
        return obs, action, reward, terminated

    def _demo_mask(self, batch: Batch, batch_size: int) -> torch.Tensor | None:
        """The batch's demo mask [B] when the behaviour-cloning term needs it (agent.bc_coef > 0), else None."""
        if self.cfg.agent.bc_coef == 0:
            return None
        if "demo" not in batch:
            raise KeyError(f"agent.bc_coef {self.cfg.agent.bc_coef:g} needs the batch's 'demo' mask [B] "
                           "(1.0 on demo windows; Replay.sample gives it)")
        demo = batch["demo"].to(self.device, torch.float32)
        if demo.shape != (batch_size,):
            raise ValueError(f"batch demo mask is {tuple(demo.shape)}, expected ({batch_size},)")
        return demo

    def _rho(self, n: int) -> torch.Tensor:
        return rho_weights(self.cfg.agent.rho, n, self.device)

    def _targets(self, obs: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor):
        return self._td_targets(self.model, obs[1:], reward, terminated, self.discount)

    # -- updates -----------------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One full TD-MPC2 update; returns the losses as floats (keys LOSS_KEYS)."""
        a, model = self.cfg.agent, self.model
        obs, action, reward, terminated = self._unpack(batch)
        demo = self._demo_mask(batch, action.shape[1])
        model.train()
        # Compute targets (and MBPO's branched model rollouts from the encoded replayed observations)
        next_z, td = self._targets(obs, reward, terminated)
        model_data = (branched_rollouts(model, next_z, a.model_rollouts, a.model_rollout_horizon, self.discount)
                      if a.model_rollouts else None)
        # Latent rollout and losses, then update the world model and the critic
        total, parts, zs = self._world_model_losses(model, a, obs, action, reward, terminated, next_z, td,
                                                    self.decoder, model_data)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self._critic_params, a.grad_clip_norm, foreach=True)
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)

        # Update the policy, then the target Q ensemble
        pi_loss, bc = self._update_pi(zs.detach(), model_data.z if model_data is not None else None, action, demo)
        model.soft_update_target_Q(a.tau)
        model.eval()
        self.updates += 1
        values = torch.cat([parts.detach(),
                            torch.stack([pi_loss, bc, total.detach(), grad_norm, self.scale.value[0]])])
        return dict(zip(LOSS_KEYS, values.cpu().tolist()))

    def _update_pi(self, zs: torch.Tensor, model_zs: torch.Tensor | None, action: torch.Tensor,
                   demo: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Maximise the scaled Q of the policy's actions plus an entropy bonus, through a frozen ensemble, and
        with `agent.bc_coef` imitate the demo windows' actions; with MBPO's model latents `model_zs`
        [k, M, latent] those take model_rollout_ratio of the Q and entropy terms. -> (policy loss, BC loss)."""
        a, model = self.cfg.agent, self.model
        model.track_q_grad(False)
        q, scaled_entropy, mean_action = self._policy_terms(model, zs)
        self.scale.update(q[0])
        q = q / self.scale.value
        pi_loss = (-(a.entropy_coef * scaled_entropy + q).mean(dim=(1, 2)) * self._rho(len(zs))).mean()
        if model_zs is not None:
            model_q, model_entropy, _ = self._policy_terms(model, model_zs)
            model_pi_loss = -(a.entropy_coef * model_entropy + model_q / self.scale.value).mean()
            pi_loss = (1.0 - a.model_rollout_ratio) * pi_loss + a.model_rollout_ratio * model_pi_loss
        bc = (bc_loss(mean_action[:-1], action, demo, self._rho(len(action))) if demo is not None
              else pi_loss.new_zeros(()))
        pi_loss = pi_loss + a.bc_coef * bc
        pi_loss.backward()
        torch.nn.utils.clip_grad_norm_(self._pi_params, a.grad_clip_norm, foreach=True)
        self.pi_optim.step()
        self.pi_optim.zero_grad(set_to_none=True)
        model.track_q_grad(True)
        return pi_loss.detach(), bc.detach()

    def update_critic(self, batch: Batch) -> dict[str, float]:
        """A value-only update: the Q ensemble on latents of the current (frozen) encoder and dynamics.

        RLPD's extra critic steps; the world model and policy are left to the full update.
        """
        a, model = self.cfg.agent, self.model
        obs, action, reward, terminated = self._unpack(batch)
        _, td = self._targets(obs, reward, terminated)
        with torch.no_grad():
            zs, _ = rollout(model, obs[0], action[:-1])
        model.train()
        values = value_loss(model, zs, action, td, self._rho(action.shape[0]))
        (a.value_coef * values).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self._q_params, a.grad_clip_norm, foreach=True)
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        model.soft_update_target_Q(a.tau)
        model.eval()
        return {"value_loss": float(values.detach()), "grad_norm": float(grad_norm)}

    def train_step(self, sample_batch: Callable[[], Batch]) -> dict[str, float]:
        """`critic_actor_ratio` value-only updates, then one full update (whose losses are returned)."""
        for _ in range(self.cfg.agent.critic_actor_ratio):
            self.update_critic(sample_batch())
        return self.update(sample_batch())

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "optim": self.optim.state_dict(),
                 "pi_optim": self.pi_optim.state_dict(), "scale": self.scale.value.detach().cpu().clone(),
                 "updates": self.updates}
        if self.decoder is not None:
            state["decoder"] = self.decoder.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in ("model", "optim", "pi_optim", "scale", "updates") if k not in state]
        if missing:
            raise KeyError(f"agent state is missing {missing}")
        if ("decoder" in state) != (self.decoder is not None):
            raise ValueError(f"agent.decoder_coef: the state {'has' if 'decoder' in state else 'has no'} decoder, "
                             f"this agent (agent.decoder_coef {self.cfg.agent.decoder_coef:g}) "
                             f"{'has' if self.decoder is not None else 'has none'}")
        self.model.load_state_dict(state["model"])
        if self.decoder is not None:
            self.decoder.load_state_dict(state["decoder"])
        self.optim.load_state_dict(state["optim"])
        self.pi_optim.load_state_dict(state["pi_optim"])
        self.scale.value.copy_(state["scale"])
        self.updates = int(state["updates"])
