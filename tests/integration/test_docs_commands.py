"""Every ``fedflower <overrides>`` line the README and the docs show, run for real.

``tests/unit/test_readme_claims.py`` composes and validates every shown line (every combination
of a multirun); here each line trains, in this one process through :func:`fedflower.run` (the
CLI's own compose-and-run path), with ``num_rounds=1`` appended: what a page shows — that the
options exist, fit together and train — survives one round, and the suite stays short. Of a
multirun, the first combination runs (the others differ only in values the unit test composes).
Lines that only print the config (``--cfg job``) or name the reader's own files
(``dataset.path=...``; ``tests/integration/test_quickstart.py`` runs those on files it makes)
are left to the unit test. A line on another Keras backend (``backend=jax``) runs as the
``fedflower`` command in a process of its own: a process cannot switch its Keras backend.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import pytest
from docs_pages import shown_runs
from helpers import run_fedflower

import fedflower

RUNS = shown_runs()
CHEAP = ["num_rounds=1"]
"""Appended to every line (replacing the line's own ``num_rounds``)."""


def cheap(overrides: list[str]) -> list[str]:
    """The line's overrides with one round."""
    kept = [o for o in overrides if o.split("=")[0] not in {c.split("=")[0] for c in CHEAP}]
    return [*kept, *CHEAP]


def other_backend(overrides: list[str]) -> bool:
    """Whether the line asks for a Keras backend other than this process's."""
    return any(
        o.startswith("backend=") and o.split("=", 1)[1] != keras.backend.backend()
        for o in overrides
    )


def test_every_page_with_fedflower_lines_is_covered() -> None:
    pages = {where.split(":")[0] for where, _, _ in RUNS}
    assert {"docs/how-to/strategies.md", "docs/how-to/privacy.md", "docs/how-to/sweeps.md"} <= pages


@pytest.mark.slow
def test_every_shown_fedflower_line_trains_a_round(tmp_path: Path) -> None:
    failed = []
    for i, (where, command, overrides) in enumerate(RUNS):
        try:
            if other_backend(overrides):
                (tmp_path / str(i)).mkdir()
                done = run_fedflower(cheap(overrides), cwd=tmp_path / str(i))
                assert done.returncode == 0, done.stderr[-1000:]
                continue
            result = fedflower.run(*cheap(overrides), output_dir=tmp_path / str(i))
            assert len(result.rounds) == 1 and math.isfinite(result.final["loss"])
        except Exception as exc:  # report every failing line, not just the first
            failed.append(f"{where}: `{command}`: {type(exc).__name__}: {exc}")
    assert not failed, "\n".join(failed)
