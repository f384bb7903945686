"""No function body in fedflower/ is longer than 60 lines (its docstring aside), read with ast."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 60


def body_lengths(path: Path) -> dict[str, int]:
    """``qualified name -> lines`` of every function in ``path``, docstring excluded."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = getattr(child, "name", "")
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                body = child.body
                if ast.get_docstring(child) is not None:
                    body = body[1:]
                if body:
                    end = body[-1].end_lineno or body[-1].lineno
                    lengths[prefix + name] = end - body[0].lineno + 1
            visit(child, prefix + name + "." if name else prefix)

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return lengths


def test_no_function_body_is_longer_than_the_limit() -> None:
    found = {
        f"{path.relative_to(ROOT).as_posix()}:{name}": lines
        for path in sorted((ROOT / "fedflower").rglob("*.py"))
        for name, lines in body_lengths(path).items()
    }
    assert len(found) > 300  # the walk reached the methods too
    long = {name: lines for name, lines in found.items() if lines > LIMIT}
    assert not long, f"longer than {LIMIT} lines: {long}"


def test_the_length_counts_the_body_without_its_docstring(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    body = "".join(f"        x = {i}\n" for i in range(61))
    source.write_text(f'class C:\n    def f(self):\n        """Doc.\n\n        More."""\n{body}')
    assert body_lengths(source) == {"C.f": 61}
