"""What the README quotes from the code stays what the code does: the per-round line's format
(every example round line is the recorder's own line for the numbers it shows) and the example
plugin's line counts."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flwr.app import MetricRecord, RecordDict
from omegaconf import DictConfig
from rich.console import Console

from fedflower import keys
from fedflower.server import recorder as recorder_module
from fedflower.server.recorder import Recorder

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
PLUGIN = REPO / "examples" / "strategy-plugin" / "fedflower_trimmedmean" / "strategy.py"
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2}
ROUND = re.compile(
    r"round +(?P<round>\d+)/(?P<total>\d+) \| test loss (?P<loss>\S+) acc (?P<acc>\S+) "
    r"\| fed loss (?P<fed_loss>\S+) acc (?P<fed_acc>\S+) \| down +(?P<down>[\d.]+) (?P<du>\S+) "
    r"up +(?P<up>[\d.]+) (?P<uu>\S+) \| (?P<seconds>[\d.]+)s(?: \| t=(?P<t>[\d.]+)s)?$"
)


def readme_round_lines() -> list[str]:
    """The README's example round lines without extras beyond virtual time.

    Lines with more fields (privacy, asynchronous, compression sections) quote those
    sections' runs; the recorder's own tests cover their fields.
    """
    lines = [x for x in README.splitlines() if re.match(r"round +\d+/\d+ \|", x)]
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


def test_the_readme_has_round_lines_of_the_default_experiment(
    make_cfg: Callable[..., DictConfig],
) -> None:
    lines = readme_round_lines()
    default = [x for x in lines if "/10 |" in x]  # the default experiment's first and last
    assert len(default) >= 2
    # a simulated run has a virtual clock (the latency model) unless latency=none: `t=`
    clocked = make_cfg([]).latency.get("enabled", True)
    assert all(("| t=" in x) == clocked for x in default), default
    assert all(ROUND.match(x) for x in lines), [x for x in lines if not ROUND.match(x)]


@pytest.mark.parametrize("example", readme_round_lines())
def test_every_readme_round_line_is_the_recorders_line(
    example: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert recorded_line(example, monkeypatch, tmp_path) == example


def test_the_quoted_plugin_line_counts_are_the_files() -> None:
    text = PLUGIN.read_text(encoding="utf-8")
    quoted = re.search(r"trimmed mean,\s+(\d+)\s+lines of strategy code", README)
    assert quoted and int(quoted.group(1)) == len(text.splitlines())
    combine = next(
        node
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef) and node.name == "combine"
    )
    body = combine.body[1:]  # after the docstring
    lines = (body[-1].end_lineno or 0) - body[0].lineno + 1
    hook = re.search(r"usually only `(\w+)\(updates\)`.*?trimmed mean is (\d+) lines", README, re.S)
    assert hook and hook.group(1) == "combine" and int(hook.group(2)) == lines
