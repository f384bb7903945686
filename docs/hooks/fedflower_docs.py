"""MkDocs hooks of fedflower's site, and the page helpers its tests use.

Generated at build time, so they cannot drift from the code: the config reference (every
group, option and key, composed by Hydra from ``conf/``, described by the YAML comments and the
``_target_``'s numpydoc docstring), the CLI reference (each command's ``--help``), the
benchmark tables (``bench/results/*.md`` with machine, date and command), a notebook of every
tutorial, and the How-to section of the navigation (every page under ``docs/how-to/``).
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the reference imports fedflower
REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
CONF = REPO / "conf"
RESULTS = REPO / "bench" / "results"
HOW_TO = "how-to/"
"""The nav entry replaced by every page under ``docs/how-to/`` (index first, then by title)."""

BENCHMARKS: dict[str, tuple[str, str]] = {
    "overhead": ("Framework overhead against a bare Keras loop", "python bench/overhead.py"),
    "overhead_ray": (
        "Ray engine against a plain Flower app",
        "python bench/overhead.py --ray --clients 10 --rounds 5 --repeats 1",
    ),
    "peers": (
        "Against pfl-research",
        "python bench/peers.py --tasks hospitals,digits,text "
        "--sides fedflower,fedflower-2threads,pfl,pfl-1thread --repeats 3",
    ),
    "peers_flower": (
        "Against a plain Flower app on Flower's simulation engine",
        "python bench/peers.py --sides fedflower,flower --output peers_flower",
    ),
    "parallel": ("Parallel clients on one machine", "python bench/parallel.py --repeats 5"),
    "aggregation": ("Aggregation throughput", "python bench/aggregation.py"),
    "defaults_sweep": ("Strategy defaults", "python bench/defaults_sweep.py"),
    "compression": ("Communication compression", "python bench/compression.py"),
    "compression_small": (
        "Compression, default model",
        "python bench/compression.py --models small --name compression_small",
    ),
    "compression_1M": (
        "Compression, 1M-parameter model",
        "python bench/compression.py --models 1M --clients 5 --rounds 5 --name compression_1M",
    ),
    "compression_1M_long": (
        "Compression, 1M-parameter model, 15 rounds",
        "python bench/compression.py --models 1M --clients 5 --rounds 15 --settings none int8 "
        '"topk 10% + EF" --name compression_1M_long',
    ),
    "codec_speed": (
        "Codec speed",
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 "
        "python bench/compression.py --no-runs",
    ),
    "privacy": ("Privacy and utility", "python bench/privacy.py"),
    "robustness": ("Robust aggregation under attack", "python bench/robustness.py"),
    "scale": (
        "Scale: virtual clients per round",
        "python bench/scale.py --clients 10 1000 10000 100000 --rounds 4 --ray-timeout 400",
    ),
    "scale_ray": (
        "Scale on Ray",
        "python bench/scale.py --engines ray --clients 10 1000 --rounds 3 --name scale_ray",
    ),
    "readme_numbers": ("Default experiment", "python bench/readme_numbers.py"),
}
"""Results file stem -> (title, the command that writes it)."""

NOT_RUN = re.compile(r"<!--\s*(?:not run:|run by)\s*(?P<why>.+?)\s*-->")
"""``<!-- not run: why -->`` or ``<!-- run by tests/... -->`` on the line above a block."""
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```", re.M | re.S
)


class Block(NamedTuple):
    """A fenced code block of a page: its language, code and whether the tests run it."""

    lang: str
    code: str
    line: int
    not_run: str | None = None


def code_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text``; a block right after ``<!-- not run: why -->`` is not run."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()[-1:] or [""]
        mark = NOT_RUN.search(before[0])
        blocks.append(
            Block(
                match["lang"],
                match["code"],
                text.count("\n", 0, match.start()) + 1,
                mark["why"] if mark else None,
            )
        )
    return blocks


def notebook(text: str) -> dict[str, Any]:
    """A Jupyter notebook (nbformat 4.5) of a page: its Python blocks as code cells, in order."""
    title = next((x[2:] for x in text.splitlines() if x.startswith("# ")), "fedflower")
    cells = [{"cell_type": "markdown", "id": "title", "metadata": {}, "source": f"# {title}"}]
    for i, block in enumerate(b for b in code_blocks(text) if b.lang == "python" and not b.not_run):
        cell = {"cell_type": "code", "id": f"cell-{i}", "metadata": {}, "source": block.code}
        cells.append(cell | {"outputs": [], "execution_count": None})
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": kernel}, "cells": cells}


# -- benchmarks ------------------------------------------------------------------------------


def _results_date(stem: str) -> str:
    """The date a results file was written: its ``date`` field, else its last commit's date."""
    meta = RESULTS / f"{stem}.json"
    if meta.is_file():
        data = json.loads(meta.read_text())
        if isinstance(data, dict) and data.get("date"):
            return str(data["date"])[:10]
    found = subprocess.run(
        ["git", "log", "-1", "--format=%cs", "--", f"bench/results/{stem}.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return found or dt.date.fromtimestamp((RESULTS / f"{stem}.md").stat().st_mtime).isoformat()


def _machine(stem: str, body: str) -> tuple[str, str]:
    """``(machine, body without its "Machine:" line)`` of a results table."""
    first, _, rest = body.partition("\n")
    if first.startswith("Machine:"):
        return first.removeprefix("Machine:").strip().rstrip("."), rest.lstrip("\n")
    meta = RESULTS / f"{stem}.json"
    data = json.loads(meta.read_text()) if meta.is_file() else {}
    machine = data.get("machine") if isinstance(data, dict) else None
    return str(machine or "2-core x86_64"), body


def benchmark_section(stem: str) -> str:
    """One results file as a section: title, caption (machine, date, command), its tables."""
    title, command = BENCHMARKS.get(
        stem, (stem.replace("_", " ").capitalize(), f"python bench/{stem}.py")
    )
    body = (RESULTS / f"{stem}.md").read_text(encoding="utf-8").strip()
    body = re.sub(r"^# .*\n+", "", body)  # the file's own heading
    machine, body = _machine(stem, body)
    body = re.sub(r"^(#+) ", r"#\1 ", body, flags=re.M)  # its sections under this one
    caption = f"*Machine: {machine}. Date: {_results_date(stem)}. File: `bench/results/{stem}.md`.*"
    return f"## {title}\n\n{caption}\n\n```bash\n{command}\n```\n\n{body}\n"


def benchmarks_page() -> str:
    """Every ``bench/results/*.md`` table, in :data:`BENCHMARKS`' order, then the others."""
    stems = sorted(p.stem for p in RESULTS.glob("*.md"))
    ordered = [s for s in BENCHMARKS if s in stems] + [s for s in stems if s not in BENCHMARKS]
    head = (
        "# Benchmarks\n\nEach table is a results file under `bench/results/`, shown as the "
        "command above it wrote it; run the command to measure it on your machine.\n\n"
    )
    return head + "\n".join(benchmark_section(s) for s in ordered)


# -- config reference ------------------------------------------------------------------------


def yaml_comments(path: Path) -> tuple[str, dict[str, str]]:
    """A YAML file's leading comment and ``dotted key -> inline comment``."""
    lead: list[str] = []
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    started = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if not started and line.startswith("#"):
            if not line.startswith("# @package"):
                lead.append(line.lstrip("# ").strip())
            continue
        key = re.match(r"^(?P<indent> *)(?P<key>[\w.]+):(?P<rest>.*)$", line)
        if not key:
            continue
        started = True
        indent = len(key["indent"])
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, key["key"])]
        comment = re.search(r"\s#\s*(.*)$", key["rest"])
        if comment:
            comments[".".join(k for _, k in stack)] = comment.group(1).strip()
    return " ".join(lead), comments


def param_docs(target: str) -> tuple[str, dict[str, str]]:
    """The summary line and ``parameter -> description`` of a ``_target_``'s numpydoc docstring."""
    try:
        from hydra.utils import get_object

        obj = get_object(target)
    except Exception:  # an optional dependency missing: no docstring, the YAML still documents
        return "", {}
    doc = inspect.getdoc(obj) or ""
    summary = doc.split("\n\n")[0].replace("\n", " ")
    params: dict[str, str] = {}
    section = re.search(r"Parameters\n-+\n(.*?)(?:\n\n[A-Z][a-z]+\n-+\n|\Z)", doc, re.S)
    if section:
        for names, desc in re.findall(
            r"^(\S[^\n:]*?)(?: :[^\n]*)?\n((?:    [^\n]*\n?)+)", section[1], re.M
        ):
            for name in names.split(","):
                params[name.strip()] = " ".join(desc.split())
    return summary, params


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), node)]


def _cell(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return "`" + text.replace("|", "\\|") + "`"


def option_section(group: str, option: str) -> str:
    """One option of a group: what it is, and a table of its keys with defaults and meaning."""
    from omegaconf import OmegaConf

    from fedflower.api import compose

    path = CONF / group / f"{option}.yaml"
    lead, comments = yaml_comments(path)
    for sibling in sorted((CONF / group).glob("*.yaml")):  # keys an option inherits (defaults)
        comments = yaml_comments(sibling)[1] | comments
    if group == "experiment":
        body = path.read_text(encoding="utf-8").split("\n", 1)[1].strip()
        return f"### `{group}={option}`\n\n{lead}\n\n```yaml\n{body}\n```\n"
    node = OmegaConf.to_container(compose(f"{group}={option}")[group], resolve=False)
    target = node.get("_target_", "") if isinstance(node, dict) else ""
    summary, params = param_docs(target) if target else ("", {})
    rows = [
        f"| `{key}` | {_cell(value)} | {comments.get(key) or params.get(key.split('.')[0], '')} |"
        for key, value in _leaves(node)
        if key not in ("_target_", "defaults")
    ]
    text = f"### `{group}={option}`\n\n{lead or summary}\n\n"
    if target:
        text += f"Builds `{target}`" + (f": {summary}" if lead and summary else ".") + "\n\n"
    if rows:
        text += "| key | default | meaning |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n"
    return text


def config_reference() -> str:
    """The config reference page: top-level keys, then every group's options."""
    _, top = yaml_comments(CONF / "config.yaml")
    lines = [
        "# Configuration reference",
        "",
        "Generated from `conf/` when the site is built: every group, its options and their keys "
        "with the default each option composes to. Choose an option with `group=option`, change "
        "a key with `group.key=value` (command line) or `fedflower.run(group={...})` (Python).",
        "",
        "## Top-level keys",
        "",
        "| key | meaning |",
        "| --- | --- |",
        *[f"| `{k}` | {v} |" for k, v in top.items() if not k.startswith("hydra")],
        "",
    ]
    for group in sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"):
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        lines += [f"## `{group}`", "", ", ".join(f"`{o}`" for o in options), ""]
        lines += [option_section(group, option) for option in options]
    return "\n".join(lines) + "\n"


# -- CLI reference ---------------------------------------------------------------------------

COMMANDS = [
    ["fedflower", "--help"],
    ["fedflower", "export", "--help"],
    ["fedflower-compare", "--help"],
    ["fedflower-deploy", "--help"],
]


def cli_reference() -> str:
    """Every command's ``--help``, as the installed commands print it."""
    bin_dir = Path(sys.executable).parent
    parts = [
        "# Command line",
        "",
        "The commands fedflower installs; each section is its `--help`.",
        "",
    ]
    for argv in COMMANDS:
        out = subprocess.run(
            [str(bin_dir / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        parts += [
            f"## `{' '.join(argv[:-1])}`",
            "",
            "```text",
            (out.stdout or out.stderr).strip(),
            "```",
            "",
        ]
    return "\n".join(parts)


# -- MkDocs hooks ----------------------------------------------------------------------------


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem.replace("-", " ").capitalize()


def how_to_nav() -> list[Any]:
    """Every page under ``docs/how-to/``: the index first, then by title."""
    pages = sorted((DOCS / "how-to").glob("*.md"), key=lambda p: (p.stem != "index", _title(p)))
    return [
        {_title(p): f"how-to/{p.name}"} if p.stem != "index" else f"how-to/{p.name}" for p in pages
    ]


def _expand(nav: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in nav:
        if isinstance(item, dict):
            ((title, value),) = item.items()
            if value == HOW_TO:
                out.append({title: how_to_nav()})
            else:
                out.append({title: _expand(value) if isinstance(value, list) else value})
        else:
            out.append(item)
    return out


def on_config(config: Any) -> Any:
    """Fill the How-to section of the navigation with every page under ``docs/how-to/``."""
    config["nav"] = _expand(config["nav"])
    return config


GENERATED = {
    "reference/config.md": config_reference,
    "reference/cli.md": cli_reference,
    "benchmarks.md": benchmarks_page,
}


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages and a notebook of every tutorial."""
    from mkdocs.structure.files import File

    for uri, make in GENERATED.items():
        files.append(File.generated(config, uri, content=make()))
    for page in sorted((DOCS / "tutorials").glob("*.md")):
        content = json.dumps(notebook(page.read_text(encoding="utf-8")), indent=1)
        files.append(File.generated(config, f"tutorials/{page.stem}.ipynb", content=content))
    return files
