"""What the README and the documentation pages claim stays true.

- Every number a page quotes in its prose comes from a results file (``bench/results/``), or
  from the code, configs or tests that produce or check it.
- Every command a page shows is run by a test or marked ``<!-- not run: why -->`` right above its
  block: ``fedflower <overrides>`` lines are composed and validated here (the command's own first
  step) and run in ``tests/integration/test_docs_commands.py``; Python blocks run as notebooks in
  ``tests/integration/test_tutorials.py``.
- Example round lines are the recorder's own line for their numbers, and the example plugin's
  quoted line counts are the file's.
- No development history: no issue numbers, sessions or "it was" in any page or comment.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from docs_pages import BASH, BLOCKS, READERS_FILES, TEXTS, fedflower_overrides, shell_lines
from flwr.app import MetricRecord, RecordDict
from helpers import REPO
from omegaconf import DictConfig
from rich.console import Console

from fedflower import api, keys
from fedflower.server import recorder as recorder_module
from fedflower.server.recorder import Recorder
from fedflower.server.rules import validate

README = TEXTS["README.md"]
PLUGIN = REPO / "examples" / "strategy-plugin" / "fedflower_trimmedmean" / "strategy.py"
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2}
ROUND = re.compile(
    r"round +(?P<round>\d+)/(?P<total>\d+) \| test loss (?P<loss>\S+) acc (?P<acc>\S+) "
    r"\| fed loss (?P<fed_loss>\S+) acc (?P<fed_acc>\S+) \| down +(?P<down>[\d.]+) (?P<du>\S+) "
    r"up +(?P<up>[\d.]+) (?P<uu>\S+) \| (?P<seconds>[\d.]+)s(?: \| t=(?P<t>[\d.]+)s)?$"
)
SOURCES = [
    *(REPO / "bench" / "results").glob("*.*"),
    *(REPO / "tests").rglob("*.py"),
    *(REPO / "conf").rglob("*.yaml"),
    *(REPO / "fedflower").rglob("*.py"),
    *(REPO / "strategies").rglob("*.py"),
    REPO / "pyproject.toml",
]
"""Where a quoted number may come from: results files, and the code, configs and tests."""
NUMBER = re.compile(r"(?<![\w.:/-])(\d+\.\d+)(?![\w.]*\d)")
HISTORY = re.compile(
    r"\b(?:this|the first|previous|earlier|last|that) session\b|\b[Ii]t was\b"
    r"|\b[Ii]ssue #?\d+|(?<![\w&])#\d{1,3}\b"
)
"""Development history: sessions, "it was", issue numbers."""


# -- numbers ----------------------------------------------------------------------------------


def prose(text: str) -> str:
    """A page without its code blocks, inline code, links' targets and arXiv/eprint ids."""
    text = re.sub(r"^( *)```.*?^\1```", "", text, flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"(arXiv:|eprint |arxiv\.org/abs/)\S+", "", text)


def sourced_numbers() -> set[tuple[int, float]]:
    """``(decimals, value)`` of every number in :data:`SOURCES`, rounded to 0..6 decimals."""
    found: set[tuple[int, float]] = set()
    for path in SOURCES:
        for token in re.findall(r"\d+\.\d+|\d+", path.read_text(encoding="utf-8", errors="ignore")):
            value = float(token)
            found.update((k, round(value, k)) for k in range(7))
    return found


@pytest.fixture(scope="module")
def sourced() -> set[tuple[int, float]]:
    return sourced_numbers()


@pytest.mark.parametrize("page", list(TEXTS))
def test_every_quoted_number_has_a_source(page: str, sourced: set[tuple[int, float]]) -> None:
    unsourced = [
        token
        for token in NUMBER.findall(prose(TEXTS[page]))
        if (len(token.split(".")[1]), round(float(token), len(token.split(".")[1]))) not in sourced
    ]
    assert not unsourced, (
        f"{page} quotes numbers no results file, config or test holds: {unsourced}"
    )


# -- commands ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("page", "block"), BASH, ids=[f"{p}:{b.line}" for p, b in BASH])
def test_every_shown_command_is_checked_or_marked_not_run(page: str, block: ModuleType) -> None:
    for command in shell_lines(block.code):
        runs = fedflower_overrides(command)
        assert runs is not None, (
            f"{page}:{block.line}: `{command}` is neither a `fedflower <overrides>` line (checked "
            "here) nor in a block marked <!-- not run: why --> (or run it in a Python block)"
        )
        for overrides in runs:
            if not any(o.startswith(READERS_FILES) for o in overrides):
                validate(api.compose(*overrides))


def test_the_readmes_csv_command_is_the_one_the_quickstart_test_runs() -> None:
    """The README's CLI example (marked not run there) is the get-started page's command, which
    ``tests/integration/test_quickstart.py`` runs on the files the page makes."""

    def csv_commands(page: str) -> list[str]:
        return [
            c
            for b in BLOCKS[page]
            if b.lang == "bash"
            for c in shell_lines(b.code)
            if "dataset=csv" in c
        ]

    assert csv_commands("README.md") == csv_commands("docs/get-started/your-data.md") != []


def test_not_run_marks_say_why() -> None:
    marks = [
        (p, b.line, b.not_run) for p, bs in BLOCKS.items() for b in bs if b.not_run is not None
    ]
    assert all(len(why) >= 10 for _, _, why in marks), marks


# -- history ----------------------------------------------------------------------------------


def comment_texts() -> dict[str, str]:
    """Pages, and the comments and docstrings of the code, by file."""
    found = dict(TEXTS)
    for folder in (
        "fedflower",
        "strategies",
        "bench",
        "tests",
        "conf",
        "examples",
        "hydra_plugins",
    ):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".yaml", ".toml", ".md") and path.name != Path(__file__).name:
                found[str(path.relative_to(REPO))] = path.read_text(encoding="utf-8")
    return found


def test_no_development_history_anywhere() -> None:
    hits = [
        f"{name}: {match.group(0)!r}"
        for name, text in comment_texts().items()
        for match in HISTORY.finditer(text)
    ]
    assert not hits, hits


# -- round lines and the plugin ----------------------------------------------------------------


def round_lines() -> list[str]:
    """The pages' example round lines without extras beyond virtual time.

    Lines with more fields (privacy, asynchronous, compression) quote those sections' runs; the
    recorder's own tests cover their fields.
    """
    lines = [
        x for text in TEXTS.values() for x in text.splitlines() if re.match(r"round +\d+/\d+ \|", x)
    ]
    return [x for x in lines if re.search(r"\| [\d.]+s(?: \| t=[\d.]+s)?$", x)]


def recorded_line(example: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The recorder's line for the numbers of ``example`` (read loosely: any format)."""
    numbers = re.findall(r"\d+(?:\.\d+)?", example)
    units = re.findall(r"\b(B|KiB|MiB)\b", example)
    rnd, total, loss, acc, fed_loss, fed_acc, down, up, seconds = numbers[:9]
    clock = iter([0.0, 0.0, float(seconds)])
    monkeypatch.setattr(recorder_module.time, "perf_counter", lambda: next(clock))
    recorder = Recorder(tmp_path, num_rounds=int(total), progress=False)
    recorder.console = Console(width=200, record=True)
    recorder.start()
    fed = MetricRecord({keys.EVAL_LOSS: float(fed_loss), keys.EVAL_ACCURACY: float(fed_acc)})
    fed["n"] = 1
    recorder.evaluate_metrics_hook()([RecordDict({"metrics": fed})], "n")
    extra = {"virtual_time": float(numbers[9])} if len(numbers) > 9 else {}
    recorder.round_end(
        int(rnd),
        float(loss),
        float(acc),
        round(float(down) * UNITS[units[0]]),
        round(float(up) * UNITS[units[1]]),
        **extra,
    )
    return recorder.console.export_text().strip()


def test_the_pages_show_round_lines_of_the_default_experiment(
    make_cfg: Callable[..., DictConfig],
) -> None:
    lines = round_lines()
    default = [x for x in lines if "/10 |" in x]  # the default experiment's first and last
    assert len(default) >= 2
    # a simulated run has a virtual clock (the latency model) unless latency=none: `t=`
    clocked = make_cfg([]).latency.get("enabled", True)
    assert all(("| t=" in x) == clocked for x in default), default
    assert all(ROUND.match(x) for x in lines), [x for x in lines if not ROUND.match(x)]


@pytest.mark.parametrize("example", sorted(set(round_lines())))
def test_every_round_line_is_the_recorders_line(
    example: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert recorded_line(example, monkeypatch, tmp_path) == example


def test_the_quoted_plugin_line_counts_are_the_files() -> None:
    text = PLUGIN.read_text(encoding="utf-8")
    page = TEXTS["docs/contributing.md"]
    quoted = re.search(r"trimmed mean,\s+(\d+)\s+lines of strategy code", page)
    assert quoted and int(quoted.group(1)) == len(text.splitlines())
    combine = next(
        node
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef) and node.name == "combine"
    )
    body = combine.body[1:]  # after the docstring
    lines = (body[-1].end_lineno or 0) - body[0].lineno + 1
    hook = re.search(r"usually only `(\w+)\(updates\)`.*?trimmed mean is (\d+) lines", page, re.S)
    assert hook and hook.group(1) == "combine" and int(hook.group(2)) == lines


def test_the_readme_stays_short() -> None:
    assert len(README.splitlines()) <= 250
