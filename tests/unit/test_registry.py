"""Strategy discovery via entry points (server.registry); plugin configs on Hydra's path."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from importlib.metadata import entry_points as real_entry_points
from pathlib import Path

import pytest
from fedflower.strategies.fedavg import FedAvg
from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from fedflower.errors import PluginError
from fedflower.server import registry
from fedflower.server.checked import CheckedFedAvg
from fedflower.server.deadline import DEADLINE_KEYS
from hydra_plugins.fedflower_searchpath import FedflowerPluginConfigs

BUILT_IN = ["fedadagrad", "fedadam", "fedavg", "fedavgm", "fedprox", "fedsgd", "fedyogi"]


class FakeEntryPoints:
    """Stands in for importlib.metadata.entry_points: the real ones plus extra, counted calls."""

    def __init__(self) -> None:
        self.extra: dict[str, list[EntryPoint]] = {}
        self.calls = 0

    def add(self, group: str, name: str, value: str) -> None:
        self.extra.setdefault(group, []).append(EntryPoint(name=name, value=value, group=group))

    def __call__(self, *, group: str) -> list[EntryPoint]:
        self.calls += 1
        return [*real_entry_points(group=group), *self.extra.get(group, [])]


@pytest.fixture
def fake_eps(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEntryPoints]:
    fake = FakeEntryPoints()
    monkeypatch.setattr(registry, "entry_points", fake)
    registry.refresh()
    yield fake
    monkeypatch.undo()
    registry.refresh()


def test_built_in_strategies_are_found_through_entry_points() -> None:
    assert set(BUILT_IN) <= set(registry.names())
    for name in BUILT_IN:
        assert issubclass(registry.load(name), CheckedFedAvg)
    assert registry.load("fedavg") is FedAvg


def test_unknown_name_lists_the_installed_ones() -> None:
    with pytest.raises(PluginError) as err:
        registry.load("fedmagic")
    message = str(err.value)
    assert "unknown strategy 'fedmagic'" in message
    for name in BUILT_IN:
        assert name in message


def test_broken_plugin_warns_and_is_skipped(
    fake_eps: FakeEntryPoints, caplog: pytest.LogCaptureFixture
) -> None:
    fake_eps.add(registry.GROUP, "broken", "no_such_module_for_fedflower:Strategy")
    fake_eps.add(registry.GROUP, "typo", "fedflower.strategies.fedavg:NoSuchClass")
    with caplog.at_level(logging.WARNING, logger="fedflower.server.registry"):
        infos = registry.available()
    names = [i.name for i in infos]
    assert "broken" not in names and "typo" not in names
    assert set(BUILT_IN) <= set(names)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "'broken'" in warned and "'typo'" in warned and "skipped" in warned
    with pytest.raises(PluginError, match="failed to load"):
        registry.load("broken")


def test_available_gives_class_path_and_first_doc_line() -> None:
    infos = {i.name: i for i in registry.available()}
    assert infos["fedprox"].target == "fedflower.strategies.fedprox:FedProx"
    assert "arXiv:1812.06127" in infos["fedprox"].description
    assert "\n" not in infos["fedsgd"].description


def test_discovery_is_cached_until_refresh(fake_eps: FakeEntryPoints) -> None:
    registry.names()
    registry.names()
    registry.load("fedavg")
    assert fake_eps.calls == 1
    fake_eps.add(registry.GROUP, "later", "fedflower.strategies.fedavg:FedAvg")
    assert "later" not in registry.names()  # installed after discovery: not seen yet
    registry.refresh()
    assert "later" in registry.names()
    assert registry.load("later") is FedAvg
    assert fake_eps.calls == 2


def test_duplicate_name_keeps_the_first_and_warns(
    fake_eps: FakeEntryPoints, caplog: pytest.LogCaptureFixture
) -> None:
    fake_eps.add(registry.GROUP, "fedavg", "fedflower.strategies.fedprox:FedProx")
    with caplog.at_level(logging.WARNING, logger="fedflower.server.registry"):
        assert registry.load("fedavg") is FedAvg
    assert "registered twice" in caplog.text


# -- plugin configs on Hydra's search path ---------------------------------------------------
def test_config_entry_points_become_pkg_search_paths(
    fake_eps: FakeEntryPoints, caplog: pytest.LogCaptureFixture
) -> None:
    fake_eps.add(registry.CONF_GROUP, "zeta", "zeta_plugin.conf")
    fake_eps.add(registry.CONF_GROUP, "alpha", "alpha_plugin.conf")
    fake_eps.add(registry.CONF_GROUP, "bad", "not a module!")
    with caplog.at_level(logging.WARNING, logger="fedflower.server.registry"):
        paths = registry.config_search_paths()
    assert ("fedflower-plugin:alpha", "pkg://alpha_plugin.conf") in paths
    assert ("fedflower-plugin:zeta", "pkg://zeta_plugin.conf") in paths
    assert [p for _, p in paths].index("pkg://alpha_plugin.conf") < [p for _, p in paths].index(
        "pkg://zeta_plugin.conf"
    )
    assert not any("not a module" in p for _, p in paths)
    assert "'bad'" in caplog.text


def search_path(main: str) -> ConfigSearchPathImpl:
    path = ConfigSearchPathImpl()
    path.append("hydra", "pkg://hydra.conf")
    path.append("main", main)
    return path


def test_search_path_plugin_appends_plugin_configs_after_fedflowers(
    fake_eps: FakeEntryPoints,
) -> None:
    fake_eps.add(registry.CONF_GROUP, "mine", "my_plugin.conf")
    path = search_path("pkg://fedflower.conf")
    FedflowerPluginConfigs().manipulate_search_path(path)
    entries = [(e.provider, e.path) for e in path.get_path()]
    assert entries.index(("main", "pkg://fedflower.conf")) < entries.index(
        ("fedflower-plugin:mine", "pkg://my_plugin.conf")
    )
    other_app = search_path("pkg://someone_else.conf")
    FedflowerPluginConfigs().manipulate_search_path(other_app)
    assert len(other_app.get_path()) == 2  # other Hydra apps are left alone


def test_plugin_strategy_config_composes_by_name(
    fake_eps: FakeEntryPoints,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_cfg: Callable[..., DictConfig],
) -> None:
    conf = tmp_path / "toy_fedflower_plugin" / "conf"
    (conf / "strategy").mkdir(parents=True)
    (tmp_path / "toy_fedflower_plugin" / "__init__.py").write_text("")
    (conf / "__init__.py").write_text("")
    (conf / "strategy" / "toy.yaml").write_text(
        "defaults:\n  - fedavg\n  - _self_\nname: toy\nfraction_train: 0.5\nsharpness: 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_eps.add(registry.CONF_GROUP, "toy", "toy_fedflower_plugin.conf")
    cfg = make_cfg(["strategy=toy", "strategy.sharpness=4"])
    assert cfg.strategy.name == "toy"
    assert cfg.strategy.sharpness == 4
    assert cfg.strategy.fraction_train == 0.5
    assert cfg.strategy.min_train_nodes == 1  # inherited from fedflower's fedavg.yaml


# -- typed strategy options ----------------------------------------------------------------
def plugin_package(tmp_path: Path, name: str, yaml: str, options: str) -> str:
    """A plugin package on ``sys.path``: ``conf/strategy/<name>.yaml`` and ``options.py``."""
    package = tmp_path / f"{name}_fedflower_plugin"
    (package / "conf" / "strategy").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "conf" / "__init__.py").write_text("")
    (package / "conf" / "strategy" / f"{name}.yaml").write_text(yaml)
    (package / "options.py").write_text(options)
    return package.name


SHARP_OPTIONS = """
from dataclasses import dataclass
from fedflower.server.options import SamplingOptions

@dataclass
class SharpOptions(SamplingOptions):
    name: str = "sharp"
    sharpness: int = 3
"""


def test_a_plugin_types_its_own_options(
    fake_eps: FakeEntryPoints,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_cfg: Callable[..., DictConfig],
) -> None:
    """Hydra refuses an unknown key and a wrong type of a plugin's own option while composing."""
    yaml = "defaults:\n  - fedavg\n  - _self_\nname: sharp\nsharpness: 3\n"
    package = plugin_package(tmp_path, "sharp", yaml, SHARP_OPTIONS)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_eps.add(registry.CONF_GROUP, "sharp", f"{package}.conf")
    fake_eps.add(registry.SCHEMA_GROUP, "sharp", f"{package}.options:SharpOptions")
    cfg = make_cfg(["strategy=sharp", "strategy.sharpness=4", "strategy.fraction_train=0.5"])
    assert OmegaConf.get_type(cfg.strategy).__name__ == "SharpOptions"
    assert (cfg.strategy.sharpness, cfg.strategy.fraction_train) == (4, 0.5)
    assert cfg.strategy.min_train_nodes == 1  # inherited from fedflower's fedavg.yaml
    with pytest.raises(HydraException):
        make_cfg(["strategy=sharp", "strategy.sharpness=very"])
    with pytest.raises(HydraException):
        make_cfg(["strategy=sharp", "strategy.sharpnes=4"])


def test_broken_option_schemas_warn_and_are_skipped(
    fake_eps: FakeEntryPoints, caplog: pytest.LogCaptureFixture
) -> None:
    fake_eps.add(registry.SCHEMA_GROUP, "gone", "no_such_module_for_fedflower:Options")
    fake_eps.add(registry.SCHEMA_GROUP, "plain", "fedflower.server.registry:GROUP")
    with caplog.at_level(logging.WARNING, logger="fedflower.server.registry"):
        found = registry.schemas()
    assert "gone" not in found and "plain" not in found
    assert "'gone'" in caplog.text and "not a dataclass" in caplog.text


@pytest.mark.parametrize("name", sorted(registry.names()))
def test_each_built_in_schema_types_its_yaml_file_and_constructor(name: str) -> None:
    """The schema's fields are the YAML file's keys (with fedavg's) and the class's options."""
    import yaml

    schema = registry.schemas()[name]
    own = {f.name for f in dataclasses.fields(schema)} - set(DEADLINE_KEYS)
    conf = Path(registry.__file__).parents[2] / "conf" / "strategy"
    keys = set(yaml.safe_load((conf / f"{name}.yaml").read_text()))
    if "defaults" in keys:
        keys = (keys - {"defaults"}) | set(yaml.safe_load((conf / "fedavg.yaml").read_text()))
    assert own == keys
    assert own - {"name"} <= set(registry.strategy_options(registry.load(name)) or own)


def test_registering_the_schemas_imports_no_strategy_and_no_tensorflow() -> None:
    """Hydra registers them at every start: no strategy class (nor Keras) is imported."""
    code = (
        "import sys\n"
        "from fedflower.server.options import register\n"
        "register()\n"
        "heavy = [m for m in sys.modules if m.startswith(('tensorflow', 'keras', "
        "'fedflower.strategies.fed', 'fedflower.server.checked'))]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
