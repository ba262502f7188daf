"""Config loading: defaults, bundled names, overrides, and one-line errors naming the key."""

import pytest

from resflow.config.loading import bundled_config_names, load_config, resolve_config_path
from resflow.config.schema import ACTIVATION_NAMES, ConfigError, parse_override
from resflow.models.activations import ACTIVATIONS


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_name_from_stem(tmp_path):
    cfg = load_config(write(tmp_path, "model: {depth: 3, width: 4}", "mine.yaml"))
    assert cfg.name == "mine"
    assert (cfg.seed, cfg.seeds, cfg.dtype, cfg.loss) == (0, 1, "float32", "random")  # issue 20: not sum
    m = cfg.model
    assert (m.block, m.activation, m.residual, m.residual_scale, m.norm, m.norm_type) == (
        "mlp",
        "tanh",
        False,
        1.0,
        "none",
        "layernorm",
    )
    assert (m.preactivation, m.bias, m.share_weights, m.init.scheme, m.init.scale, m.init.bias_std) == (
        False,
        True,
        False,
        "default",
        1.0,
        None,
    )
    assert (cfg.data.batch_size, cfg.data.input, cfg.data.input_scale) == (32, "normal", 1.0)


def test_bundled_configs_resolve_by_name_and_validate():
    names = bundled_config_names()
    assert {"deep50", "deep50-residual"} <= set(names)
    for name in names:
        load_config(name)  # every shipped config is valid
    deep = load_config("deep50")
    assert (deep.model.depth, deep.model.width, deep.model.activation, deep.model.residual) == (50, 64, "tanh", False)
    assert load_config("deep50-residual").model.residual is True
    assert resolve_config_path("deep50.yaml") == resolve_config_path("deep50")


def test_activation_registry_matches_config_names():
    assert set(ACTIVATIONS) == set(ACTIVATION_NAMES)


def test_overrides_are_typed_and_validated():
    cfg = load_config("deep50", ["model.depth=7", "model.residual=true", "model.init.scale=1e-1", "seeds=2"])
    assert (cfg.model.depth, cfg.model.residual, cfg.model.init.scale, cfg.seeds) == (7, True, 0.1, 2)
    assert cfg.replace({"model.width": 3}).model.width == 3


@pytest.mark.parametrize(
    "item,expected",
    [("model.depth=5", ("model.depth", 5)), ("loss=mse", ("loss", "mse")), ("a.b= [1, 2]", ("a.b", [1, 2]))],
)
def test_parse_override(item, expected):
    assert parse_override(item) == expected


BAD = [
    # (yaml text, overrides, fragments the one-line message must contain)
    ("model: {depth: 0, width: 4}", [], ["model.depth", "greater than or equal to 1", "0"]),
    ("model: {depth: '5', width: 4}", [], ["model.depth", "valid integer", "'5'"]),
    ("model: {depth: 5, width: [4]}", [], ["model.width", "[4]"]),
    ("model: {depth: 5, width: 4, residual: 'yes'}", [], ["model.residual", "boolean", "'yes'"]),
    ("model: {depth: 5, width: 4, activaton: tanh}", [], ["model.activaton", "unknown key", "did you mean 'model.activation'"]),
    ("modle: {depth: 5, width: 4}", [], ["modle", "did you mean 'model'"]),
    ("model: {depth: 5, width: 4, activation: swish}", [], ["model.activation", "'tanh'", "'swish'"]),
    ("model: {depth: 5, width: 4, norm: mid}", [], ["model.norm", "'pre'", "'mid'"]),
    ("model: {depth: 5, width: 4, init: {scale: -1}}", [], ["model.init.scale", "greater than or equal to 0"]),
    ("model: {depth: 5, width: 4, init: {scale: .nan}}", [], ["model.init.scale", "finite"]),
    ("model: {depth: 5, width: 4}\nseeds: 0", [], ["seeds", "greater than or equal to 1"]),
    ("model: {depth: 5, width: 4}\ndata: {batch_size: 0}", [], ["data.batch_size"]),
    ("model: {width: 4}", [], ["model.depth", "required"]),
    ("model: {depth: 5, width: 4}", ["model.depth=-3"], ["--set", "model.depth", "-3"]),
    ("model: {depth: 5, width: 4}", ["model.dept=3"], ["--set", "did you mean 'model.depth'"]),
    ("model: {depth: 5, width: 4}", ["model.depth"], ["--set", "KEY=VALUE"]),
    ("model: {depth: 5, width: 4}", ["model.depth.x=1"], ["model.depth is a value"]),
    ("model: [1, 2", [], ["invalid YAML", "line 1"]),
    ("", [], ["empty"]),
    ("- 1\n- 2", [], ["top level must be a mapping", "list"]),
    ("42", [], ["top level must be a mapping", "int"]),
    ("!!python/object/apply:os.system ['echo pwned']", [], ["invalid YAML"]),
]


@pytest.mark.parametrize("text,overrides,fragments", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_configs_give_one_line_errors(tmp_path, text, overrides, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(ConfigError, match="not found.*did you mean 'deep50'"):
        load_config("deep5")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_round_trips_through_yaml(tmp_path):
    cfg = load_config("deep50", ["model.init.bias_std=0.5"])
    again = load_config(write(tmp_path, cfg.to_yaml()))
    assert again == cfg


def test_exponent_floats_without_a_dot(tmp_path):
    cfg = load_config(write(tmp_path, "model: {depth: 2, width: 2, init: {scale: 1e-3}}"), ["data.input_scale=2E+1"])
    assert cfg.model.init.scale == 0.001 and cfg.data.input_scale == 20.0


def test_python_tags_never_execute(tmp_path):
    marker = tmp_path / "pwned"
    text = f"!!python/object/apply:os.system ['touch {marker}']"
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text))
    assert not marker.exists()


def test_configs_path_resolves_to_bundled_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("configs/deep50.yaml") == resolve_config_path("deep50")
    with pytest.raises(ConfigError):
        resolve_config_path("elsewhere/deep50.yaml")
