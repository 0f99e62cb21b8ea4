"""The controller's safety property with many draws: the unit tier draws a few hundred inputs
(test_control_loop.py) to stay quick; `make test` also runs this one."""
from __future__ import annotations

import pytest
from hypothesis import settings

from test_control_loop import any_inputs, check_targets_in_limits_and_steps

pytestmark = pytest.mark.slow


@settings(max_examples=5000, deadline=None)
@any_inputs
def test_safety_property_any_input_thoroughly(actions, positions, noise):
    check_targets_in_limits_and_steps(actions, positions, noise)
