"""A rosbags typestore that knows the standard ROS 2 messages and ours, parsed from the same msg/*.msg text
rosidl generates from, so bags written here carry the type hashes a ROS 2 install expects."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "tdmpc_ros"
TRANSITION = f"{PACKAGE}/msg/Transition"
MODEL_UPDATE = f"{PACKAGE}/msg/ModelUpdate"
PLANNER_STATUS = f"{PACKAGE}/msg/PlannerStatus"
# Newest ROS 2 distribution rosbags ships that we target (the Kilted wheels in requirements.txt).
BASE_STORE = getattr(Stores, "ROS2_KILTED", Stores.LATEST)


def msg_dirs() -> list[Path]:
    """Where msg/*.msg may be: the source tree, then share/tdmpc_ros/msg of each ament prefix and this Python."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    return [Path(__file__).resolve().parents[2] / "msg"] + [Path(p) / "share" / PACKAGE / "msg" for p in prefixes]


def find_msg_dir() -> Path:
    for path in msg_dirs():
        if (path / "Transition.msg").is_file():
            return path
    raise FileNotFoundError(f"{PACKAGE} message definitions (Transition.msg) not found in any of "
                            f"{[str(p) for p in msg_dirs()]}")


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The standard ROS 2 types plus tdmpc_ros/msg/* (built once per process)."""
    store = get_typestore(BASE_STORE)
    types = {}
    for path in sorted(find_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store
