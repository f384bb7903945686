"""Strategy plugins, discovered through the ``fedflower.strategies`` entry-point group.

Built-in strategies register the same way as third-party ones (in ``pyproject.toml``), so there
is one discovery path and nothing is registered as an import side effect. Discovery is cached;
``refresh()`` forgets the cache (e.g. after ``pip install`` of a plugin in the same process).
"""

from __future__ import annotations

import inspect
import logging
import re
from dataclasses import dataclass, is_dataclass
from functools import cache, lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from fedflower.errors import ConfigError, PluginError

GROUP = "fedflower.strategies"
CONF_GROUP = "fedflower.conf"
"""Entry-point group naming a plugin's config package (``pkg://`` path with ``strategy/*.yaml``)."""
SCHEMA_GROUP = "fedflower.strategy_options"
"""Entry-point group naming each strategy's typed options (a dataclass), by the strategy's name."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    """One installed strategy plugin."""

    name: str
    target: str
    description: str


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            log.warning(
                "strategy %r is registered twice (%s and %s); keeping the first",
                ep.name,
                found[ep.name].value,
                ep.value,
            )
            continue
        found[ep.name] = ep
    return found


def refresh() -> None:
    """Forget the cached discovery so newly installed plugins are found."""
    _entry_points.cache_clear()
    _load.cache_clear()
    schemas.cache_clear()
    config_search_paths.cache_clear()


def names() -> list[str]:
    """Sorted names of the installed strategies."""
    return sorted(_entry_points())


@cache
def _load(name: str) -> type:
    ep = _entry_points()[name]
    try:
        return ep.load()
    except Exception as exc:
        raise PluginError(f"strategy plugin {name!r} ({ep.value}) failed to load: {exc}") from exc


def load(name: str) -> type:
    """Return the strategy class registered as ``name``.

    Raises
    ------
    PluginError
        If no plugin has that name (the message lists the installed ones) or it fails to import.
    """
    if name not in _entry_points():
        raise PluginError(f"unknown strategy {name!r}; installed: {', '.join(names())}")
    return _load(name)


def available() -> list[PluginInfo]:
    """Name, class and one-line description of every plugin that loads; broken ones warn."""
    infos = []
    for name in names():
        try:
            cls = _load(name)
        except PluginError as exc:
            log.warning("%s (skipped)", exc)
            continue
        doc = (cls.__doc__ or "").strip().splitlines()
        infos.append(PluginInfo(name, _entry_points()[name].value, doc[0] if doc else ""))
    return infos


@lru_cache(maxsize=1)
def schemas() -> dict[str, type]:
    """The strategies' typed options (their Hydra schemas) by name.

    A plugin names a dataclass in the ``fedflower.strategy_options`` entry-point group under
    its strategy's name, e.g. ``median = "fedflower_median.options:MedianOptions"``, in a
    module that imports neither Flower nor TensorFlow (it is loaded whenever Hydra starts
    for fedflower). A strategy without one (or a config of your own under another name) is
    composed untyped, its options checked when it is built, against its constructor
    (:func:`strategy_options`). An entry that fails to load or is not a dataclass warns and
    is skipped; of two entries with one name the first (sorted by value) is kept.
    """
    found: dict[str, type] = {}
    for ep in sorted(entry_points(group=SCHEMA_GROUP), key=lambda e: (e.name, e.value)):
        if ep.name in found:
            continue
        try:
            node = ep.load()
        except Exception as exc:
            log.warning(
                "strategy options %r (%s) failed to load: %s (skipped)", ep.name, ep.value, exc
            )
            continue
        if not (isinstance(node, type) and is_dataclass(node)):
            log.warning("strategy options %r = %r is not a dataclass (skipped)", ep.name, ep.value)
            continue
        found[ep.name] = node
    return found


@lru_cache(maxsize=1)
def config_search_paths() -> tuple[tuple[str, str], ...]:
    """Hydra search-path entries ``(provider, "pkg://<package>")`` of plugins' config packages.

    A plugin lists its config package in the ``fedflower.conf`` entry-point group, e.g.
    ``median = "fedflower_median.conf"``; the package holds ``strategy/<name>.yaml``. Values
    that are not a module name warn and are skipped. Used by the Hydra search-path plugin
    ``hydra_plugins.fedflower_searchpath``.
    """
    paths: list[tuple[str, str]] = []
    for ep in sorted(entry_points(group=CONF_GROUP), key=lambda e: (e.name, e.value)):
        module = ep.value.strip()
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module):
            log.warning(
                "config entry point %r = %r is not a package name like 'my_plugin.conf' (skipped)",
                ep.name,
                ep.value,
            )
            continue
        entry = (f"fedflower-plugin:{ep.name}", f"pkg://{module}")
        if entry[1] not in {p for _, p in paths}:
            paths.append(entry)
    return tuple(paths)


def strategy_options(cls: type) -> list[str] | None:
    """Keyword options a strategy class accepts, following ``**options`` up its bases.

    A subclass may name only its own options and pass ``**options`` on to its base; the
    options are then collected from each ``__init__`` up the MRO until one that takes no
    ``**kwargs``. ``None`` if the chain never closes (then no option can be checked).
    """
    names: list[str] = []
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [
            p.name
            for p in params
            if p.name != "self"
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            and p.name not in names
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def build_strategy(options: dict[str, Any], **runtime: Any) -> Any:
    """Instantiate the strategy plugin named ``options["name"]`` with the other options.

    ``runtime`` objects (e.g. metric hooks) are passed only when the class accepts them.
    """
    from fedflower.server.deadline import DeadlineOptions  # imports Flower's grid

    _, options = DeadlineOptions.split(options)  # the run's deadline: not a plugin option
    name = options.pop("name", None)
    if not name:
        raise ConfigError("strategy.name is missing")
    cls = load(name)
    params = strategy_options(cls)
    if params is not None:
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise ConfigError(
                f"strategy {name!r} has no option {', '.join(unknown)}; "
                f"its options: {', '.join(p for p in params if p not in runtime)}"
            )
        runtime = {k: v for k, v in runtime.items() if k in params}
    try:
        return cls(**options, **runtime)
    except ConfigError:
        raise  # the class's own rule, already in the <key> must be <rule> shape
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"strategy {name!r}: {exc}") from exc
