"""Named factories for Hugging Face model families (`model.factory: hf:gpt2`): built from their
config classes with random weights; nothing is downloaded. Needs the `hf` extra (transformers).

Keyword arguments are the config class's own (`n_layer`, `n_embd`, ... for GPT-2; `depths`,
`layer_type`, `hidden_sizes` ... for ResNet); a key the config class does not have is refused.
"""

from __future__ import annotations

import os

from resflow.errors import ConfigError


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network
    try:
        import transformers
    except ImportError:
        raise ConfigError("model.factory: hf:* needs transformers; install resflow's extra: pip install 'resflow[hf]'") from None
    transformers.logging.set_verbosity_error()
    return transformers


def _build(model_cls, config_cls, defaults: dict, kwargs: dict):
    """model_cls(config_cls(**defaults, **kwargs)). A key the config class does not have is a
    TypeError; any value transformers refuses, while validating the config or building the model
    (`n_layer: abc`, `activation_function: nope`), a ValueError naming it: the kwargs are at fault."""
    known = set(config_cls().to_dict())
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"{config_cls.__name__} has no {', '.join(map(repr, unknown))}")
    try:
        return model_cls(config_cls(**{**defaults, **kwargs}))
    except Exception as err:  # noqa: BLE001 - transformers' own validation errors, of many types
        raise ValueError(f"{type(err).__name__}: {' '.join(str(err).split())}") from err


def gpt2(**kwargs):
    """GPT2LMHeadModel; defaults: GPT-2 small's shape (12 layers, 768 wide, 12 heads), no dropout."""
    t = _transformers()
    defaults = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return _build(t.GPT2LMHeadModel, t.GPT2Config, defaults, kwargs)


def resnet(**kwargs):
    """ResNetForImageClassification; defaults: ResNet-50 (bottleneck, depths 3-4-6-3)."""
    t = _transformers()
    return _build(t.ResNetForImageClassification, t.ResNetConfig, {}, kwargs)


FACTORIES = {"gpt2": gpt2, "resnet": resnet}
