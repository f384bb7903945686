"""The documentation site's generated pages (docs/hooks/fedflower_docs.py) cover what exists."""

from __future__ import annotations

import re

from helpers import REPO, docs_hooks


def test_the_how_to_section_lists_every_page_index_first() -> None:
    nav = docs_hooks().how_to_nav()
    assert nav[0] == "how-to/index.md"
    listed = {next(iter(item.values())) for item in nav[1:]}
    assert listed == {f"how-to/{p.name}" for p in (REPO / "docs/how-to").glob("*.md")} - {
        "how-to/index.md"
    }


def test_the_config_reference_has_every_option_and_its_default() -> None:
    page = docs_hooks().config_reference()
    for yaml in (REPO / "conf").glob("*/*.yaml"):
        assert f"### `{yaml.parent.name}={yaml.stem}`" in page
    fedprox = page.split("### `strategy=fedprox`", 1)[1].split("###", 1)[0]
    assert re.search(r"\| `proximal_mu` \| `0.01` \| \S", fedprox)  # default and its meaning


def test_every_results_file_is_a_captioned_table_with_its_command() -> None:
    page = docs_hooks().benchmarks_page()
    for md in (REPO / "bench/results").glob("*.md"):
        section = page.split(f"File: `bench/results/{md.name}`", 1)
        assert len(section) == 2, md.name
        caption = section[0].rsplit("\n", 1)[-1]
        assert "Machine: " in caption and re.search(r"Date: \d{4}-\d\d-\d\d", caption)
        assert re.match(r"\.\*\n\n```bash\n[^`]*python bench/\w+\.py", section[1]), md.name


def test_a_page_becomes_a_notebook_of_its_python_blocks() -> None:
    text = "# T\n\n```python\na = 1\n```\n\n<!-- not run: a reason -->\n```python\nb = 2\n```\n"
    nb = docs_hooks().notebook(text)
    assert [c["source"] for c in nb["cells"]] == ["# T", "a = 1\n"]
