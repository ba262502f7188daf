"""Property-based fuzzing of the config loader and the --set parser: any input gives a valid Config
or a one-line ConfigError, never another exception."""

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resflow.config.loading import load_config, parse_yaml
from resflow.config.schema import Config, parse_override, validate
from resflow.errors import ConfigError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    "name",
    "seed",
    "seeds",
    "dtype",
    "device",
    "loss",
    "model",
    "data",
    "depth",
    "width",
    "activation",
    "residual",
    "residual_scale",
    "norm",
    "norm_type",
    "init",
    "scheme",
    "scale",
    "bias_std",
    "block",
    "heads",
    "ffn",
    "ffn_mult",
    "rezero",
    "batch_size",
    "input",
    "seq_len",
    "vocab",
    "zero_out",
    "x",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["tanh", "relu", "pre", "post", "transformer", "mlp", "float64", "yes", "3", "", "deepnorm"]),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12,
)
model_sections = st.dictionaries(st.sampled_from(KEYS), values, max_size=6).map(lambda d: {"depth": 2, "width": 4, **d})
configs = st.fixed_dictionaries(
    {"model": st.one_of(model_sections, values)},
    optional={k: values for k in ("name", "seed", "seeds", "dtype", "loss", "data", "device")},
)
anything = st.one_of(values, configs, st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), values, max_size=4))


def _clean(err: ConfigError) -> None:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text
    assert len(text) < 2000


@FAST
@given(anything)
def test_any_data_gives_a_config_or_a_config_error(data):
    try:
        cfg = load_config(data) if isinstance(data, dict) else validate(data)  # type: ignore[arg-type]
    except ConfigError as err:
        _clean(err)
    else:
        assert isinstance(cfg, Config) and cfg.model.depth >= 1 and cfg.model.width >= 1


@FAST
@given(configs)
def test_valid_configs_round_trip_through_yaml(data):
    try:
        cfg = load_config(data)
    except ConfigError as err:
        _clean(err)
        return
    again = load_config(parse_yaml(cfg.to_yaml(), "round trip"))
    assert again == cfg


yaml_texts = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from(
            [
                "model:",
                " depth: 3",
                " width: 4",
                "  - 1",
                "- x",
                "!!python/object/apply:os.system [x]",
                "seed: !!int abc",
                "a: &x [1]",
                "b: *x",
                "c: *y",
                "{",
                "}",
                "[",
                "]",
                ":",
                "? [1]",
                "name: 2001-02-30",
                "seeds: 1e3",
                "model: {depth: 2, width: 4}",
                "\t",
                "'",
                '"',
                "!!binary AAA",
                "a: !!float x",
                "a: 1",
                "a: 2",
                "<<: *x",
                "%YAML 1.1",
                "---",
                "...",
            ]
        ),
        max_size=8,
    ).map("\n".join),
)


@FAST
@given(yaml_texts)
def test_any_yaml_text_gives_a_config_or_a_config_error(text):
    try:
        data = parse_yaml(text, "fuzz.yaml")
        if isinstance(data, dict):
            load_config(data)
    except ConfigError as err:
        _clean(err)


@FAST
@given(
    st.one_of(
        st.text(max_size=40),
        st.tuples(
            st.sampled_from(
                [
                    "model.depth",
                    "model.width",
                    "seeds",
                    "model",
                    "model.init.scale",
                    "data",
                    "model.depth.x",
                    "name",
                    ".",
                    "a..b",
                    " ",
                ]
            ),
            st.text(max_size=20),
        ).map("=".join),
    )
)
def test_any_set_item_gives_a_config_or_a_config_error(item):
    base = {"model": {"depth": 2, "width": 4}}
    try:
        key, _ = parse_override(item)
        assert key and "=" in item
        cfg = validate(base, overrides=[item])
    except ConfigError as err:
        _clean(err)
    else:
        assert isinstance(cfg, Config)


def test_yaml_never_builds_python_objects(tmp_path):
    marker = tmp_path / "pwned"
    for text in (
        f"!!python/object/apply:os.system ['touch {marker}']",
        f"model: !!python/object/apply:os.system ['touch {marker}']",
        "model: !!python/name:os.system",
        "x: !!python/object/new:dict {}",
    ):
        with pytest.raises(ConfigError, match="not allowed"):
            parse_yaml(text, "evil.yaml")
    assert not marker.exists()
    assert yaml.safe_load("a: 1") == {"a": 1}  # the global safe loader is untouched by ours
    assert yaml.safe_load("a: 1e3") == {"a": "1e3"}
