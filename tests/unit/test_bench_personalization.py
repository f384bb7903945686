"""bench/personalization.py's report: the goals it states and the how-to page's copy of it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_personalization", REPO / "bench" / "personalization.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(mean: float, losing: int | None) -> dict:
    gaining = None if losing is None else 2 - losing
    return {
        "global_accuracy": None if losing is None else 0.5,
        "personal_mean": mean,
        "personal_worst": mean,
        "sites_gaining": gaining,
        "sites_losing": losing,
        "sites": 2,
        "bytes": 0,
    }


def test_findings_state_the_goals_and_the_methods_that_do_not_help() -> None:
    rows = {"local-only": result(0.8, None), "FedAvg": result(0.5, 2), "Ditto": result(0.95, 0)}
    lines = bench().findings("digits, Dirichlet(0.1)", {**rows, "FedDyn": result(0.4, 2)})
    assert lines[0] == "- best personal mean: Ditto 0.950 (goal >= 0.90: met)"
    assert "- not above training alone (0.800 mean): FedAvg, FedDyn" in lines
    assert "- do not help over FedAvg (0.500 mean): FedDyn" in lines
    lines = bench().findings("hospitals", {**rows, "Ditto": result(0.9, 1)})
    assert lines[1].startswith("- fewest sites losing from joining: Ditto, 1 of 2")
    assert lines[1].endswith("(goal on the hospitals: none loses: not met)")


def test_the_how_to_page_shows_the_results_files_tables() -> None:
    module = bench()
    results = (REPO / "bench" / "results" / "personalization.md").read_text()
    page = module.DOCS_PAGE.read_text()
    shown = page.split(module.BEGIN, 1)[1].split(module.END, 1)[0].strip("\n")
    assert shown and shown == results[results.index("\n### ") :].strip("\n")
