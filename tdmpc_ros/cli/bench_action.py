"""`tdmpc-ros bench action`: what the action rule costs per control tick (control/action_rule.py).

Per action space: the time of `ActionRule.apply`, wall and the calling thread's CPU time (what it costs,
whatever else the machine runs) (joint: the clips and the box check, one FK; cartesian: one FK,
IK, the clips and the box check; cartesian_held: the same with task.hold_orientation's IK), the part of the tick after the plan, measured over a random walk of actions
from the home pose that keeps running into the workspace box (a box tight around the goal box), so the
bisection that shrinks a step is in the figures. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="kuka_iiwa", help="bundled arm name or URDF path")
    parser.add_argument("--ticks", type=int, default=3000, help="ticks per action space")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object (always does)")


def stats(seconds: list[float]) -> dict[str, float]:
    import numpy as np

    us = np.asarray(seconds) * 1e6
    return {"p50": float(np.percentile(us, 50)), "p99": float(np.percentile(us, 99)), "max": float(us.max())}


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from tdmpc_ros.config import load_config
    from tdmpc_ros.control.action_rule import ActionRule, box_distance
    from tdmpc_ros.kinematics import ArmKinematics, robot_overrides

    result = {"robot": args.robot, "ticks": args.ticks}
    for name, space, hold in (("joint", "joint", False), ("cartesian", "cartesian", False),
                              ("cartesian_held", "cartesian", True)):
        overrides = robot_overrides(args.robot)
        overrides["task"].update(action_space=space, hold_orientation=hold)
        cfg = load_config(None, overrides)
        task = cfg.task
        kin = ArmKinematics(task)
        home = np.clip(np.asarray(cfg.sim.home, np.float64), kin.safe_lower, kin.safe_upper)
        ee = kin.fk(home)
        # A box 10 cm around the goal box and the home pose's end effector: walks keep meeting its walls.
        task.workspace_low = (np.minimum(task.goal_low, ee) - 0.1).tolist()
        task.workspace_high = (np.maximum(task.goal_high, ee) + 0.1).tolist()
        rule = ActionRule(task, kin.safe_lower, kin.safe_upper, kin.fk, kin.ik, cfg.controller.max_tracking_error)
        rng = np.random.default_rng(args.seed)
        target, wall, cpu, shrunk = home, [], [], 0
        for _ in range(args.ticks):
            action = np.clip(rng.normal(0.3, 0.8, task.action_dim), -1, 1)  # a drift, so the walls are met
            start, start_cpu = time.perf_counter(), time.thread_time()
            new, applied = rule.apply(action, target, target, task.action_scale)
            cpu.append(time.thread_time() - start_cpu)
            wall.append(time.perf_counter() - start)
            if np.linalg.norm(applied) < 0.9 * np.linalg.norm(action):  # the clips or the box took a share
                shrunk += 1
            assert box_distance(kin.fk(new), rule.box_low, rule.box_high) <= 1e-9
            target = new
        result[name] = {"apply_us": stats(wall), "apply_cpu_us": stats(cpu), "steps_cut_short": shrunk / args.ticks}
        kin.close()
    print(json.dumps(result))
    return 0
