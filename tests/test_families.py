"""The block-family registry (resflow.config.families): each family's section takes its own keys only,
refuses another family's by name in one line, and answers for itself what other layers used to
branch on `block ==` for."""

import pytest

from resflow.config.families import FAMILIES
from resflow.config.loading import bundled_config_names, load_config
from resflow.errors import ConfigError

MINIMAL = {  # the smallest valid model section of each family
    "mlp": {"depth": 2, "width": 4},
    "transformer": {"block": "transformer", "depth": 2, "width": 4, "heads": 2},
    "conv": {"block": "conv", "depth": 8, "width": 4},
    "factory": {"factory": "hf:gpt2"},
}
SAMPLE = {"bool": False, "int": 2, "float": 0.5}  # a value of the key's own kind: refused for its name alone


def minimal(name: str, **extra) -> dict:
    data = {"name": "t", "model": {**MINIMAL.get(name, {"block": name, "depth": 2, "width": 4}), **extra}}
    if name == "factory":
        data["data"] = {"shape": [2, 3]}
    return data


def foreign_cases():
    for name, family in FAMILIES.items():
        for key in sorted(family.foreign - set(family.model_fields) - {"factory"}):  # (factory selects its family)
            other = next(f for f in FAMILIES.values() if key in f.model_fields)
            ann = other.model_fields[key].annotation
            kind = next((k for k in SAMPLE if k in str(ann)), None)
            value = SAMPLE[kind] if kind else other.model_fields[key].default
            if value is None or isinstance(value, (dict, list)) or hasattr(value, "model_dump"):
                value = "x"  # (any value: the key itself is refused before its value is looked at)
            yield pytest.param(name, key, value, id=f"{name}-{key}")


def test_every_family_is_registered_with_a_minimal_config():
    assert set(MINIMAL) <= set(FAMILIES)
    for name in FAMILIES:
        assert type(load_config(minimal(name)).model) is FAMILIES[name]


@pytest.mark.parametrize("name,key,value", list(foreign_cases()))
def test_another_familys_key_is_refused_naming_the_family(name, key, value):
    """Even with a value that changes nothing (false, the other family's default): a key the family
    does not have is never silently accepted."""
    if name == "factory":
        with pytest.raises(ConfigError, match=rf"model.{key}: not used with model.factory"):
            load_config(minimal(name, **{key: value}))
        return
    with pytest.raises(ConfigError) as err:
        load_config(minimal(name), [f"model.{key}={value}"])
    own = ", ".join(FAMILIES[name].model_fields)
    message = str(err.value)
    assert message.startswith(f"--set model.{key}: not a key of block {name!r} (") and "\n" not in message
    assert message.endswith(f"(its keys: {own})") or key == "activation"  # (a transformer's points at model.ffn)


@pytest.mark.parametrize("key", ["rezero=false", "heads=4", "final_norm=false", "init.zero_out=false"])
def test_mlp_refuses_transformer_keys_even_when_false(key):
    """(Old main accepted `rezero: false`, `init.zero_out: false` on an MLP and ignored them.)"""
    with pytest.raises(ConfigError, match=rf"model.{key.split('=')[0]}"):
        load_config("deep50", [f"model.{key}"])


def test_conv_and_transformer_refuse_keys_they_ignore():
    with pytest.raises(ConfigError, match="model.share_weights: not a key of block 'conv'"):
        load_config("digits-res20", ["model.share_weights=false"])
    with pytest.raises(ConfigError, match="model.preactivation: not a key of block 'transformer'"):
        load_config("pre-norm", ["model.preactivation=false"])


def test_a_typo_still_gets_a_suggestion_and_an_unknown_block_the_names():
    with pytest.raises(ConfigError, match=r"model.depht: unknown key; did you mean 'model.depth'\?"):
        load_config("deep50", ["model.depht=3"])
    with pytest.raises(ConfigError, match=r"model.block: must be 'mlp', .* got 'cnv'; did you mean 'conv'\?"):
        load_config("deep50", ["model.block=cnv"])


def test_an_old_config_yaml_with_every_familys_keys_null_still_loads():
    """results dirs written before the registry hold every key of every family, unset ones null."""
    old = {
        "name": "old",
        "model": {
            "block": "mlp",
            "depth": 3,
            "width": 4,
            "activation": "tanh",
            "shortcut": None,
            "heads": None,
            "ffn": None,
            "ffn_mult": None,
            "final_norm": None,
            "norm_groups": None,
        },
    }
    assert load_config(old).model == load_config("deep50", ["model.depth=3", "model.width=4"]).model


@pytest.mark.parametrize("name", bundled_config_names())
def test_bundled_configs_round_trip_through_their_family(name):
    cfg = load_config(name)
    assert load_config(cfg.to_dict()) == cfg
    assert set(cfg.to_dict()["model"]) <= set(FAMILIES[cfg.model.name].model_fields)


def test_families_answer_what_other_layers_branched_on():
    conv, tf, mlp = load_config("digits-res20").model, load_config("microgpt").model, load_config("deep50").model
    assert conv.images and conv.always_classifier and not mlp.images and not tf.classifies
    assert conv.default_depths() == [8, 14, 20]  # 6n + 2 for n = 1, 2, 3
    assert mlp.default_depths() == [1, 2, 4, 8, 16, 32, 50]
    assert mlp.example_shape((1, 8, 8)) == (64,) and conv.example_shape((1, 8, 8)) == (1, 8, 8)
    data = load_config("microgpt").data
    assert tf.input_shape(data) == (data.batch_size, data.seq_len, tf.width)
    assert mlp.mean_field and not conv.mean_field and not tf.mean_field


def test_a_results_dir_written_before_the_families_still_shows_and_reruns(tmp_path):
    """Old config.yaml files hold every family's keys, unused ones null or false (rezero: false on an
    MLP, preactivation: false on a transformer): `show` rebuilds the title, and a rerun loads it."""
    import yaml

    from resflow.config.loading import load_stored_config

    old = {
        "name": "microgpt",
        "model": {
            "block": "transformer",
            "depth": 3,
            "width": 8,
            "activation": None,
            "residual": True,
            "norm": "pre",
            "norm_groups": None,
            "shortcut": None,
            "preactivation": False,
            "heads": 2,
            "rezero": False,
            "init": {"scheme": "xavier", "zero_out": False},
        },
    }
    cfg = load_stored_config(old)
    assert cfg.model.heads == 2 and cfg.model.init.zero_out is False
    mlp = {"name": "d", "model": {"depth": 2, "width": 4, "rezero": False, "init": {"zero_out": False}}}
    assert load_stored_config(mlp).model == load_config(minimal("mlp")).model
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(mlp))
    (run / "meta.json").write_text("{}")
    assert load_config(run / "config.yaml").model == load_config(minimal("mlp")).model
    with pytest.raises(ConfigError, match="model.rezero: not a key of block 'mlp'"):  # not a results dir's
        load_config(mlp)
    with pytest.raises(ConfigError, match="model.rezero: not a key of block 'mlp'"):  # true is never dropped
        load_stored_config({**mlp, "model": {**mlp["model"], "rezero": True}})
