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


def test_library_notices_are_hidden_after_flowers_once_filter() -> None:
    import warnings

    from fedflower.startup import quiet_library_notices

    with warnings.catch_warnings(record=True) as seen:
        warnings.filterwarnings("once", category=DeprecationWarning)  # what Flower's engine does
        quiet_library_notices()
        ray = "Tip: In future versions of Ray, Ray will no longer override accelerator ..."
        warnings.warn_explicit(ray, FutureWarning, "worker.py", 1, module="ray._private.worker")
        keras = "__array__ implementation doesn't accept a copy keyword, so passing copy=False"
        warnings.warn(keras, DeprecationWarning, stacklevel=1)
        warnings.warn("a user's own deprecation", DeprecationWarning, stacklevel=1)
        warnings.warn_explicit("another", FutureWarning, "user.py", 1, module="mine")
    assert [str(w.message) for w in seen] == ["a user's own deprecation", "another"]
