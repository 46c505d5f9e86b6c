"""One source of defaults: the Python constructors, the TOML schema, the estimators, the
README table and the examples agree with kirchnet.defaults, and a rule name means the same
rule everywhere."""

import inspect
import re
import tomllib
from pathlib import Path

import pytest

import kirchnet as kn
from kirchnet import defaults as D
from kirchnet import optim
from kirchnet.config import ConfigError, OptimizerConfig, RuleConfig, TaskConfig, TrainConfig
from kirchnet.estimators import ResistiveClassifier, ResistiveRegressor
from kirchnet.experiments.run import build_rule
from kirchnet.rules import GEP, AdjointCoupledLearning, CoupledLearning, EquilibriumPropagation, FiniteDifference

ROOT = Path(__file__).resolve().parents[1]


def _defaults(callable_):
    return {k: p.default for k, p in inspect.signature(callable_).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_python_constructors_use_the_defaults():
    assert _defaults(EquilibriumPropagation) == {"beta": D.EP_BETA, "variant": D.EP_VARIANT,
                                                 "nudge": D.EP_NUDGE, "loss": "mse"}
    gep = _defaults(GEP)
    assert (gep["nudge"], gep["beta"], gep["variant"]) == (D.EP_NUDGE, D.EP_BETA, D.EP_VARIANT)
    for cls in (CoupledLearning, AdjointCoupledLearning):
        assert _defaults(cls) == {"eta": D.CL_ETA, "variant": D.CL_VARIANT, "loss": "mse"}
    assert _defaults(FiniteDifference)["eps"] == D.FD_EPS
    tr = _defaults(kn.Trainer)
    assert (tr["optimizer"], tr["epochs"], tr["batch_size"], tr["clip"], tr["saturation_warning"]) == (
        D.OPTIMIZER, D.EPOCHS, D.BATCH_SIZE, D.CLIP, D.SATURATION_WARN_FRACTION)
    assert kn.Trainer().optimizer.lr == D.LR
    for name in ("sgd", "momentum", "adam"):
        assert optim.get_optimizer(name).lr == D.LR
    assert optim.Adam().lr == optim.Momentum().lr == optim.SGD().lr == D.LR
    assert optim.Momentum().beta == D.MOMENTUM
    from kirchnet.tasks import digits, iris

    for task in (iris, digits):
        assert _defaults(task)["temperature"] == D.TEMPERATURE


def test_toml_schema_uses_the_defaults():
    r = RuleConfig()
    assert (r.beta, r.nudge, r.eta, r.eps) == (D.EP_BETA, D.EP_NUDGE, D.CL_ETA, D.FD_EPS)
    o = OptimizerConfig()
    assert (o.name, o.lr, o.momentum) == (D.OPTIMIZER, D.LR, D.MOMENTUM)
    t = TrainConfig.from_dict({"task": {"name": "iris"}})
    assert (t.epochs, t.batch_size) == (D.EPOCHS, D.BATCH_SIZE)
    assert TaskConfig(name="iris").temperature == D.TEMPERATURE
    assert set(RuleConfig.model_fields["name"].annotation.__args__) == set(D.RULE_NAMES)


@pytest.mark.parametrize("name", D.RULE_NAMES)
def test_a_rule_name_means_the_same_rule_everywhere(name):
    """The config's (and the estimators') rule built by name equals the Python default."""
    built = build_rule(RuleConfig(name=name))
    python = {"analytical": kn.Analytical, "ep": EquilibriumPropagation, "gep": GEP, "cl": CoupledLearning,
              "acl": AdjointCoupledLearning, "finite_difference": FiniteDifference, "insitu": kn.InSitu}[name]
    assert type(built) is python
    if name != "insitu":  # the in-situ rule carries a seeded generator
        assert repr(built) == repr(python())


def test_estimators_use_the_defaults():
    for est in (ResistiveRegressor, ResistiveClassifier):
        d = _defaults(est)
        assert (d["optimizer"], d["lr"], d["epochs"], d["batch_size"]) == (D.OPTIMIZER, D.LR, D.EPOCHS,
                                                                          D.BATCH_SIZE)
        assert "learning_rate" not in d
    assert _defaults(ResistiveClassifier)["temperature"] == D.TEMPERATURE
    with pytest.raises(ValueError, match="learning_rate"):  # one name for the learning rate
        ResistiveRegressor().set_params(learning_rate=0.1)


def test_learning_rate_is_called_lr_in_the_config():
    with pytest.raises(ConfigError, match=r"optimizer.learning_rate: unknown key: the learning rate is called lr"):
        TrainConfig.from_dict({"task": {"name": "iris"}, "optimizer": {"learning_rate": 0.1}})


def test_readme_table_states_the_defaults():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| `([^`]+)` \|", text, flags=re.M))
    table = D.table()
    assert set(rows) == set(table), "README defaults table and kirchnet.defaults list different names"
    for name, value in table.items():
        assert rows[name] == (value if isinstance(value, str) else repr(value)), name


def test_examples_validate_and_spell_the_learning_rate_lr():
    from kirchnet.sweep import load_sweep

    examples = sorted((ROOT / "examples").glob("*.toml"))
    assert len(examples) >= 5
    for path in examples:
        text = path.read_text(encoding="utf-8")
        assert "learning_rate" not in text, path.name
        if "[sweep]" in text:
            load_sweep(path)
        else:
            TrainConfig.from_toml(path)
        data = tomllib.loads(text)
        etas = re.findall(r'"rule\.eta" = ([0-9.]+)', text) + [str(data.get("rule", {}).get("eta", D.CL_ETA))]
        assert all(float(e) <= 0.1 for e in etas), f"{path.name}: CL eta above 0.1 (see CoupledLearning)"
