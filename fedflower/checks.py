"""One way to check an option: ``<key> must be <rule>, got <value>``.

Config rules, strategy, latency and staleness constructors and data loaders all check their
numbers with :func:`check_number` (and choices with :func:`check_choice`), so every bad value
reads the same and the rule is written once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any, TypeVar

from fedflower.errors import ConfigError, FedflowerError

T = TypeVar("T")


def _bound(op: str, limit: float) -> str:
    return f"{op} {limit:g}" if isinstance(limit, float) else f"{op} {limit}"


def _rule(
    integer: bool,
    minimum: float | None,
    maximum: float | None,
    min_open: bool,
    max_open: bool,
) -> str:
    kind = "an integer" if integer else "a number"
    if minimum is not None and maximum is not None:
        left, right = "(" if min_open else "[", ")" if max_open else "]"
        return f"{kind} in {left}{minimum:g}, {maximum:g}{right}"
    if minimum is not None:
        return f"{kind} {_bound('>' if min_open else '>=', minimum)}"
    if maximum is not None:
        return f"{kind} {_bound('<' if max_open else '<=', maximum)}"
    return kind


def check_number(
    key: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
    min_open: bool = False,
    max_open: bool = False,
    allow_none: bool = False,
    error: type[FedflowerError] = ConfigError,
) -> Any:
    """Return ``value`` if it is a finite number within the bounds, else raise ``ConfigError``.

    Parameters
    ----------
    key : str
        The option's name as the user writes it (``strategy.buffer_size``).
    value : Any
        The value given. Booleans are never numbers here.
    minimum, maximum : float, optional
        Bounds, inclusive unless ``min_open`` / ``max_open``.
    integer : bool
        Require an ``int`` (a float such as ``2.0`` is refused: configs say what they mean).
    allow_none : bool
        Accept ``None`` (an option that is off), returned as is.
    error : type of FedflowerError
        What to raise: ``ConfigError`` for options, ``DataError`` for data loaders' arguments.

    Returns
    -------
    The value as ``int`` (integers) or ``float`` (other numbers).
    """
    if value is None and allow_none:
        return None
    rule = _rule(integer, minimum, maximum, min_open, max_open)
    if allow_none:
        rule += " or null"
    # numbers.Real: NumPy's scalars too (a loader's sizes); booleans are never numbers here
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and integer:
        ok = isinstance(value, numbers.Integral)
    if ok:
        number = float(value)
        ok = math.isfinite(number)
        if ok and minimum is not None:
            ok = number > minimum if min_open else number >= minimum
        if ok and maximum is not None:
            ok = number < maximum if max_open else number <= maximum
    if not ok:
        raise error(f"{key} must be {rule}, got {value!r}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def check_choice(
    key: str, value: T, choices: Iterable[T], error: type[FedflowerError] = ConfigError
) -> T:
    """Return ``value`` if it is one of ``choices``, else raise ``error`` listing them."""
    options = list(choices)
    if value not in options:
        listed = ", ".join(str(c) for c in options)
        raise error(f"{key} must be one of {listed}, got {value!r}")
    return value
