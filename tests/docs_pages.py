"""The README and documentation pages as tests read them: texts, code blocks, shown commands.

One reader for ``tests/unit/test_readme_claims.py``, ``tests/unit/test_docs_site.py``,
``tests/integration/test_tutorials.py`` and ``tests/integration/test_docs_commands.py``; the
blocks themselves are parsed by the site's own hook (``docs/hooks/fedflower_docs.py``).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from helpers import DOC_PAGES, REPO, docs_hooks

from fedflower import api

TEXTS = {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in DOC_PAGES}
"""Every page's text by its path in the repository."""
BLOCKS = {page: docs_hooks().code_blocks(text) for page, text in TEXTS.items()}
"""Every page's fenced code blocks (language, code, line, ``not_run`` reason)."""
BASH = [
    (page, block)
    for page, blocks in BLOCKS.items()
    for block in blocks
    if block.lang in ("bash", "sh", "shell") and block.not_run is None
]
"""The shell blocks a reader is shown to run (not marked ``<!-- not run: why -->``)."""
READERS_FILES = ("resume=", "dataset.path=", "model.path=", "dataset.data_files=")
"""Overrides naming a run directory or file of the reader's (tests/integration use their own)."""
INSPECT = {"--cfg", "--info", "--help", "--list-strategies", "job", "all", "searchpath"}
"""Words of a ``fedflower`` line that print the config instead of running it."""


def shell_lines(code: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [
        line.split(" #")[0].strip()
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def fedflower_overrides(line: str) -> list[list[str]] | None:
    """The override lists a plain ``fedflower [-m] <overrides>`` line runs (``None``: another
    command, or one naming the reader's own files with ``<...>``)."""
    words = shlex.split(line)
    if not words or words[0] != "fedflower":
        return None
    args = [w for w in words[1:] if w not in ("-m", "--multirun", *INSPECT)]
    if any(w.startswith("-") or "<" in w or "=" not in w for w in args):
        return None
    return api._combinations(args) if {"-m", "--multirun"} & set(words) else [args]


def shown_runs() -> list[tuple[str, str, list[str]]]:
    """``(page:line, command, overrides)`` of every shown ``fedflower`` line that trains: the
    first combination of a multirun, none of the lines that only print the config or name the
    reader's own files."""
    runs = []
    for page, block in BASH:
        for command in shell_lines(block.code):
            combos = fedflower_overrides(command)
            if not combos or INSPECT & set(shlex.split(command)):
                continue
            if not any(o.startswith(READERS_FILES) for o in combos[0]):
                runs.append((f"{page}:{block.line}", command, combos[0]))
    return runs


def notebooks() -> dict[str, dict[str, Any]]:
    """Every page as the notebook of its Python blocks (the site's downloadable notebook)."""
    return {page: docs_hooks().notebook(text) for page, text in TEXTS.items()}
