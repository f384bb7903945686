"""Every option of every config group composes, validates and instantiates; bad values fail."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import keras
import numpy as np
import pytest
from flwr_datasets.partitioner import Partitioner
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fedflower import memory
from fedflower.data.arrays import from_arrays
from fedflower.data.partition import FederatedData
from fedflower.data.population import HospitalPopulation
from fedflower.data.source import TabularSource
from fedflower.deploy.local_data import write_csv
from fedflower.engine import BACKENDS
from fedflower.errors import ConfigError, PluginError
from fedflower.experiment import validate
from fedflower.models import mlp
from fedflower.server import registry
from fedflower.server.registry import build_strategy

MakeCfg = Callable[..., DictConfig]
CONF = files("fedflower.conf")
GROUPS_IN_DEFAULTS = ["strategy", "model", "dataset", "partition", "client", "simulation"]


def group_options() -> list[tuple[str, str]]:
    """(group, option) for every yaml file of every group the package ships (not hydra/)."""
    pairs = []
    for group in sorted(p for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"):
        for option in sorted(f.name for f in group.iterdir() if f.name.endswith(".yaml")):
            pairs.append((group.name, option.removesuffix(".yaml")))
    return pairs


ALL_OPTIONS = group_options()
USER_FILES: dict[tuple[str, str], list[str]] = {
    # options that name the user's own files: the files ``user_files`` writes for them
    ("dataset", "csv"): ["dataset.path=data.csv", "dataset.label=y"],
    ("dataset", "npz"): ["dataset.path=data.npz"],
    ("dataset", "parquet"): ["dataset.path=data.parquet", "dataset.label=y"],
    ("model", "keras_file"): ["model.path=model.keras"],
    ("model", "python"): ["model.factory=fedflower.models:mlp"],
    # objects of this process, as fedflower.run(model=..., data=...) holds them
    ("model", "memory"): [f"model.key={memory.put(mlp, 'model')}"],
    ("dataset", "memory"): [
        "dataset.key="
        + memory.put(from_arrays(np.eye(7)[np.arange(40) % 7], np.arange(40) % 2), "dataset")
    ],
}


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a user's data files (40 rows, 7 features, 2 classes) and model."""
    folder = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 7)), np.arange(40) % 2
    write_csv(folder / "data.csv", x, y, label_column="y")
    np.savez(folder / "data.npz", x=x, y=y)
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    columns = {f"f{i}": x[:, i] for i in range(7)}
    pq.write_table(pa.table({**columns, "y": y}), folder / "data.parquet")
    keras.Sequential([keras.Input((7,)), keras.layers.Dense(1, activation="sigmoid")]).save(
        folder / "model.keras"
    )
    return folder


@pytest.fixture(autouse=True)
def user_files(user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(user_dir)  # USER_FILES' relative paths


def options_of(group: str) -> list[str]:
    return [o for g, o in ALL_OPTIONS if g == group]


PARTNERS = {
    ("model", "text"): ["dataset=financial_news"],
    ("model", "cnn"): ["dataset=digits"],
    ("dataset", "financial_news"): ["model=text"],
    ("dataset", "text_hub"): ["model=text"],
    ("dataset", "digits"): ["model=cnn"],
}
"""Options that only make sense together: a text model needs a text dataset and vice versa."""


def option_cfg(make_cfg: MakeCfg, group: str, option: str, *extra: str) -> DictConfig:
    """``group=option`` with a tiny federation (dataset overrides only where they exist).

    Experiments choose their own federation size, so they are composed as they are.
    """
    if group == "experiment":
        return make_cfg([f"experiment={option}", *extra])
    overrides = ["num_clients=3", "num_rounds=2", "progress=false", f"{group}={option}"]
    overrides += [*USER_FILES.get((group, option), []), *PARTNERS.get((group, option), []), *extra]
    cfg = make_cfg(overrides)
    if "patients_per_hospital" in cfg.dataset:
        cfg = make_cfg(
            [
                *overrides,
                "dataset.patients_per_hospital=200",
                "dataset.test_patients_per_hospital=50",
            ]
        )
    return cfg


def to_dict(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def literal_leaves(node: object, prefix: str = "") -> dict[str, object]:
    """``dotted key -> value`` of every leaf of a yaml file's content that is not an
    interpolation (``defaults`` aside)."""
    if isinstance(node, dict):
        found: dict[str, object] = {}
        for key, value in node.items():
            if key != "defaults":
                found |= literal_leaves(value, f"{prefix}{key}.")
        return found
    if isinstance(node, str) and ("${" in node or node == "???"):  # interpolation, or mandatory
        return {}
    return {prefix.rstrip("."): node}


def assert_option_composed(make_cfg: MakeCfg, group: str, option: str) -> None:
    """``group=option`` puts every literal value of ``conf/<group>/<option>.yaml`` in place."""
    content = OmegaConf.to_container(
        OmegaConf.create((CONF / group / f"{option}.yaml").read_text())
    )
    leaves = literal_leaves(content)
    assert leaves, f"{group}/{option}.yaml sets nothing"
    cfg = make_cfg([f"{group}={option}"])
    node = cfg if group == "experiment" else cfg[group]  # experiments are _global_ packages
    for key, value in leaves.items():
        found = OmegaConf.select(node, key)
        found = OmegaConf.to_container(found) if OmegaConf.is_config(found) else found
        assert found == value, f"{group}={option}: {key}"


def test_the_issue_groups_exist_and_have_defaults(make_cfg: MakeCfg) -> None:
    cfg = make_cfg()
    for group in GROUPS_IN_DEFAULTS:
        assert options_of(group), f"conf/{group}/ has no option"
        assert group in cfg
    assert "fedavg" in options_of("strategy")
    assert {"hospitals", "breast_cancer"} <= set(options_of("dataset"))
    assert {"auto", "natural", "iid", "dirichlet"} <= set(options_of("partition"))
    assert cfg.num_clients == 10
    assert cfg.num_rounds == 10
    assert cfg.seed == 0


def test_default_is_the_seeds_experiment(make_cfg: MakeCfg) -> None:
    cfg = make_cfg()
    assert cfg.strategy.name == "fedavg"
    assert cfg.dataset.num_hospitals == 10
    assert cfg.dataset.patients_per_hospital == 1000
    assert list(cfg.model.hidden_units) == [128]
    assert cfg.model.activation == "relu"
    assert cfg.client.optimizer._target_ == "keras.optimizers.Adam"
    validate(cfg)


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_composes_and_validates(make_cfg: MakeCfg, group: str, option: str) -> None:
    if (group, option) == ("tracking", "wandb"):
        pytest.importorskip("wandb")  # without it, validation refuses tracking=wandb (tested)
    cfg = option_cfg(make_cfg, group, option)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    validate(cfg)
    assert_option_composed(make_cfg, group, option)


@pytest.fixture(scope="module")
def hospitals_source() -> TabularSource:
    from fedflower.data import hospitals

    return hospitals.load(num_hospitals=3, patients_per_hospital=200, test_patients_per_hospital=10)


def local_corpus(tmp_path: Path) -> list[str]:
    """Overrides pointing ``dataset=text_hub`` at a local CSV file instead of the Hub."""
    path = tmp_path / "news.csv"
    rows = [f"shares {'rose' if i % 3 else 'fell'} {i},{i % 3 > 0:d}" for i in range(60)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return ["dataset.path=csv", f"dataset.data_files={path}"]


@pytest.mark.parametrize("option", options_of("dataset"))
def test_every_dataset_instantiates(make_cfg: MakeCfg, option: str, tmp_path: Path) -> None:
    local = local_corpus(tmp_path) if option == "text_hub" else []
    cfg = option_cfg(make_cfg, "dataset", option, *local)
    source = instantiate(cfg.dataset)
    if isinstance(source, HospitalPopulation):  # generates its clients; holds the test set
        source = source.source
    assert isinstance(source, TabularSource)
    assert source.num_classes >= 2
    assert len(source.y) >= cfg.num_clients
    assert source.x.shape[1:] == source.x_test.shape[1:]


@pytest.mark.parametrize("option", options_of("partition"))
def test_every_partition_instantiates_and_splits(
    tiny_cfg: MakeCfg, hospitals_source: TabularSource, option: str
) -> None:
    cfg = tiny_cfg(f"partition={option}")
    partitioner = instantiate(cfg.partition)
    assert isinstance(partitioner, Partitioner)
    fed = FederatedData(hospitals_source, partitioner, cfg.num_clients)
    sizes = [len(fed.indices(c)) for c in range(cfg.num_clients)]
    assert sum(sizes) == len(hospitals_source.y)
    assert min(sizes) > 0


MODEL_INPUTS: dict[str, np.ndarray] = {
    "cnn": np.zeros((5, 8, 8, 1), np.float32),
    "text": np.array([["profit rose"]] * 5, dtype=np.str_),
}
"""An input batch per model that does not read a flat feature vector (default: 7 features)."""


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("option", options_of("model"))
def test_every_model_instantiates(make_cfg: MakeCfg, option: str, num_classes: int) -> None:
    if option == "keras_file" and num_classes != 2:
        pytest.skip("a saved model has its own output (tests/unit/test_models.py)")
    cfg = option_cfg(make_cfg, "model", option)
    batch = MODEL_INPUTS.get(option, np.zeros((5, 7), np.float32))
    model = instantiate(cfg.model, input_shape=batch.shape[1:], num_classes=num_classes)
    assert isinstance(model, keras.Model)
    out = model(batch)
    probs = np.asarray(out)
    if num_classes == 2:
        assert probs.shape == (5, 1)  # one sigmoid unit
        assert model.layers[-1].activation is keras.activations.sigmoid
    else:
        assert probs.shape == (5, num_classes)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("option", options_of("client"))
def test_every_client_option_builds_its_optimizer(tiny_cfg: MakeCfg, option: str) -> None:
    cfg = tiny_cfg(f"client={option}", "client.learning_rate=0.125")
    optimizer = instantiate(cfg.client.optimizer, learning_rate=cfg.client.learning_rate)
    assert isinstance(optimizer, keras.optimizers.Optimizer)
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.125)
    for key in ("local_epochs", "batch_size", "learning_rate", "val_fraction"):
        assert key in cfg.client


@pytest.mark.parametrize("option", options_of("strategy"))
def test_every_strategy_instantiates(tiny_cfg: MakeCfg, option: str) -> None:
    cfg = tiny_cfg(f"strategy={option}")
    options = to_dict(cfg.strategy)
    strategy = build_strategy(options)
    assert type(strategy) is registry.load(cfg.strategy.name)
    for key, value in options.items():
        if key.startswith(("fraction_", "min_")) and hasattr(strategy, key):
            assert getattr(strategy, key) == value


def test_strategy_options_reach_the_strategy(tiny_cfg: MakeCfg) -> None:
    cfg = tiny_cfg("strategy.fraction_train=0.5", "strategy.min_train_nodes=2")
    strategy = build_strategy(to_dict(cfg.strategy))
    assert strategy.fraction_train == 0.5
    assert strategy.min_train_nodes == 2
    assert strategy.min_available_nodes == 3  # ${num_clients}


@pytest.mark.parametrize("option", options_of("simulation"))
def test_every_simulation_backend_is_known(tiny_cfg: MakeCfg, option: str) -> None:
    cfg = tiny_cfg(f"simulation={option}")
    assert cfg.simulation.backend in BACKENDS
    assert isinstance(cfg.simulation.tf_threads, int)
    assert OmegaConf.is_dict(cfg.simulation.backend_config)


@pytest.mark.parametrize("option", options_of("experiment"))
def test_every_experiment_composes(make_cfg: MakeCfg, option: str) -> None:
    cfg = make_cfg([f"experiment={option}"])
    OmegaConf.resolve(cfg)
    validate(cfg)
    strategy = build_strategy(to_dict(cfg.strategy))
    assert type(strategy) is registry.load(cfg.strategy.name)
    assert_option_composed(make_cfg, "experiment", option)


def test_quick_experiment_is_small(make_cfg: MakeCfg) -> None:
    cfg = make_cfg(["experiment=quick"])
    assert cfg.num_clients == 3
    assert cfg.num_rounds == 2
    assert cfg.dataset.num_hospitals == 3  # follows num_clients


def test_the_issue_override_example(make_cfg: MakeCfg) -> None:
    cfg = make_cfg(
        [
            "num_rounds=20",
            "num_clients=50",
            "strategy.fraction_train=0.5",
            "client.local_epochs=2",
        ]
    )
    validate(cfg)
    assert cfg.num_rounds == 20
    assert cfg.client.local_epochs == 2
    assert cfg.dataset.num_hospitals == 50
    assert cfg.partition.num_partitions == 50
    assert cfg.strategy.min_available_nodes == 50
    assert build_strategy(to_dict(cfg.strategy)).fraction_train == 0.5


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("num_clients=0", "num_clients"),
        ("num_clients=-3", "num_clients"),
        ("num_clients=abc", "num_clients"),
        ("num_clients=2.5", "num_clients"),
        ("num_rounds=0", "num_rounds"),
        (
            "strategy.fraction_train=1.5",
            r"strategy.fraction_train must be a number in \[0, 1\], got 1.5",
        ),
        ("strategy.fraction_train=-0.1", "fraction_train"),
        ("strategy.fraction_evaluate=2", "fraction_evaluate"),
        ("strategy.min_train_nodes=4", r"min_train_nodes must be an integer in \[0, 3\], got 4"),
        ("strategy.min_evaluate_nodes=-1", "min_evaluate_nodes"),
        ("strategy.min_available_nodes=10", "min_available_nodes"),
        ("client.local_epochs=0", "local_epochs"),
        ("client.batch_size=0", "batch_size"),
        ("client.learning_rate=0", "learning_rate"),
        ("client.learning_rate=-0.1", "learning_rate"),
        ("simulation.backend=nope", "simulation.backend"),
        ("num_rounds=five", r"^num_rounds must be an integer, got 'five'$"),
        ("verbose=maybe", r"^verbose must be true or false, got 'maybe'$"),
        ("checkpoint.every=-1", r"^checkpoint.every must be an integer >= 0, got -1$"),
        ("simulation.workers=0", r"^simulation.workers must be a positive integer or auto, got 0"),
        ("simulation.tf_threads=-1", r"^simulation.tf_threads must be an integer >= 0, got -1$"),
    ],
)
def test_validate_rejects(tiny_cfg: MakeCfg, override: str, match: str) -> None:
    cfg = tiny_cfg(override)
    with pytest.raises(ConfigError, match=match):
        validate(cfg)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.hidden_units=[0]"], r"^model.hidden_units must be an integer >= 1, got 0$"),
        (
            ["model=cnn", "model.dropout=1"],
            r"^model.dropout must be a number in \[0, 1\), got 1.0$",
        ),
        (
            ["model=text", "dataset=financial_news", "model.encoder=gru"],
            r"^model.encoder must be one of pool, conv, lstm, got 'gru'$",
        ),
        (
            ["model=python", "model.factory=build"],
            r"^model.factory must be 'module:function', got 'build'$",
        ),
        (["partition=dirichlet", "partition.alpha=-1"], r"^partition.alpha must be a number > 0"),
        (
            ["partition=pathological", "partition.class_assignment_mode=fair"],
            r"^partition.class_assignment_mode must be one of random, deterministic",
        ),
        (
            ["partition=shard", "partition.shard_size=0"],
            r"^partition.shard_size must be an integer >= 1 or null, got 0$",
        ),
    ],
)
def test_typed_groups_check_their_values(
    make_cfg: MakeCfg, overrides: list[str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        validate(make_cfg(overrides))


def test_unknown_strategy_name_lists_the_installed_ones() -> None:
    with pytest.raises(PluginError, match=r"unknown strategy 'nope'; installed: .*fedavg"):
        build_strategy({"name": "nope"})


def test_unknown_strategy_option_is_a_config_error(tiny_cfg: MakeCfg) -> None:
    cfg = tiny_cfg("+strategy.fraction_trian=0.5")
    with pytest.raises(ConfigError, match="fraction_trian"):
        build_strategy(to_dict(cfg.strategy))
    with pytest.raises(ConfigError, match=r"strategy\.name is missing"):
        build_strategy({"fraction_train": 1.0})


@pytest.mark.parametrize(
    "overrides",
    [
        ["strategy=nope"],
        ["foo=1"],
        ["model=transformer"],
        ["num_clients=[1,"],
        # typed groups: Hydra refuses a wrong type or an unknown key itself
        ["client.local_epochs=abc"],
        ["client.batch_size=many"],
        ["client.learning_rate=fast"],
        ["client.epochs=2"],
        ["privacy=dp_server", "privacy.noise_multiplier=abc"],
        ["privacy=dp_server", "privacy.clip=1"],
        ["attack=sign_flip", "attack.in_deployment=maybe"],
        ["strategy.fraction_train=abc"],
        ["strategy.fraction=0.5"],
        ["strategy=scaffold", "strategy.global_lr=fast"],
        ["strategy=fedbuff", "strategy.buffer_size=1.5"],
        ["+strategy.round_timeout=soon"],
        ["model.hidden=[8]"],
        ["model=cnn", "model.kernel_size=wide"],
        ["model=python", "model.factory=m:f", "model.options=[1]"],
        ["dataset.patients=50"],
        ["dataset.case_mix=high"],
        ["dataset=csv", "dataset.missing_indicator=sometimes"],
        ["partition=dirichlet", "partition.beta=1"],
        ["partition=shard", "partition.shard_size=big"],
    ],
)
def test_bad_overrides_do_not_compose(make_cfg: MakeCfg, overrides: list[str]) -> None:
    with pytest.raises(HydraException):
        make_cfg(overrides)


@pytest.mark.parametrize("name", ["fedbuff", "fedasync"])
def test_options_passed_on_to_the_base_are_checked_by_name(name: str) -> None:
    """Plugins that forward ``**options`` to their base still get unknown options rejected."""
    from fedflower.server.registry import build_strategy

    strategy = build_strategy({"name": name, "concurrency": 3, "max_staleness": 4})
    assert strategy.max_staleness == 4
    with pytest.raises(ConfigError, match=r"no option bogus; its options: concurrency, .*stale"):
        build_strategy({"name": name, "bogus": 1})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=text"], "model=fedflower.models.text_classifier reads sentences"),
        (["dataset=financial_news"], "holds sentences but model=fedflower.models.mlp"),
    ],
)
def test_text_model_and_text_data_go_together(
    make_cfg: MakeCfg, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(overrides))


def test_digits_study_sweeps_alpha_over_the_digits_experiment(make_cfg: MakeCfg) -> None:
    base = make_cfg(["experiment=digits"])
    study = make_cfg(["experiment=digits_dirichlet", "partition.alpha=0.1"])
    assert study.partition.alpha == 0.1
    assert study.partition._target_.endswith("DirichletPartitioner")
    assert base.partition._target_.endswith("IidPartitioner")
    for key in ("num_clients", "num_rounds", "client", "model", "dataset"):
        assert study[key] == base[key]


def test_registering_the_schemas_imports_no_heavy_package() -> None:
    """The model, dataset and partition schemas load before Keras, Flower and the data stacks."""
    code = (
        "import sys\n"
        "from fedflower import model_options\n"
        "from fedflower.data import options\n"
        "model_options.register(); options.register()\n"
        "heavy = {'keras', 'tensorflow', 'flwr', 'flwr_datasets', 'datasets', 'sklearn'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
