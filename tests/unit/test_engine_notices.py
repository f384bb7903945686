"""``simulation=ray``: Flower's run_simulation deprecation notice is not shown, others are."""

from __future__ import annotations

import pytest
from flwr.supercore.logger import warn_deprecated_feature

from fedflower.engine import quiet_flower_notices

NOTICE = "The `run_simulation` function is deprecated and will be removed in a future version"


def test_only_the_run_simulation_notice_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="flwr"), quiet_flower_notices():
        warn_deprecated_feature(NOTICE)
        warn_deprecated_feature("something else")
    assert "run_simulation" not in caplog.text
    assert "something else" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="flwr"):
        warn_deprecated_feature(NOTICE)  # outside the block: untouched
    assert "run_simulation" in caplog.text
