"""Shared fixtures: a private ROS domain per test, so parallel runs never cross-talk."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def ros_domain(monkeypatch):
    """A ROS_DOMAIN_ID reserved for this test (domain_coordinator), exported to child processes."""
    from domain_coordinator import domain_id

    with domain_id() as domain:
        monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
        monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        monkeypatch.setenv("PYTHONUNBUFFERED", "1")
        yield domain


@pytest.fixture
def rclpy_context(ros_domain):
    """An initialised rclpy context on the test's domain; shut down afterwards."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    yield context
    context.try_shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small updates gain nothing from a second thread, and on a shared machine spinning threads stall."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TIERS = ("unit", "ros", "slow")


def pytest_collection_modifyitems(config, items):
    """Every test names its tier, so `pytest -m unit` stays the quick loop: unit (pure core, seconds), ros (real
    nodes over DDS) or slow (minutes); a unit test is never slow."""
    for item in items:
        marks = {m.name for m in item.iter_markers()} & set(TIERS)
        if not marks or {"unit", "slow"} <= marks:
            raise pytest.UsageError(f"{item.nodeid}: mark it with exactly one of unit / ros / slow "
                                    f"(ros and slow together are fine), has {sorted(marks) or 'none'}")
