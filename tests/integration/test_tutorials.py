"""Every page's Python blocks, run as one notebook per page (nbclient), as a reader runs them.

The tutorials are notebooks a reader downloads from the site (the same notebook the site's
build writes); here each runs in a fresh directory with a Jupyter kernel. Blocks marked
``<!-- not run: why -->`` are left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from docs_pages import notebooks

NOTEBOOKS = notebooks()
RUNNABLE = [name for name, nb in NOTEBOOKS.items() if len(nb["cells"]) > 1]


def execute(notebook: dict[str, Any], cwd: Path) -> Any:
    """Run the notebook with a Python kernel in ``cwd``; a failing cell raises."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.reads(json.dumps(notebook), as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def text_of(nb: Any) -> str:
    """Everything the cells printed or displayed, as text."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_the_tutorials_and_get_started_pages_have_notebooks() -> None:
    for page in ("docs/tutorials/hospital-data.md", "docs/get-started/your-data.md", "README.md"):
        assert page in RUNNABLE


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE)
def test_the_pages_python_runs_as_a_notebook(page: str, tmp_path: Path) -> None:
    nb = execute(NOTEBOOKS[page], tmp_path)
    assert list(tmp_path.glob("outputs/*/*/metrics.jsonl")) or list(tmp_path.glob("multirun/*/*"))
    if page == "docs/tutorials/hospital-data.md":  # the round lines and the progress bar show
        assert "round   5/5 |" in text_of(nb)
        assert "federated training 5/5 rounds" in text_of(nb)  # the bar's last update
