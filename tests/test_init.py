"""Init schemes: weight statistics against their definitions (large matrices, loose but failing tolerances)."""

import math

import pytest
import torch

from resflow.config.loading import load_config
from resflow.models import build_model
from resflow.models.init import init_linears


def weights(scheme, scale=1.0, width=400, bias_std=None, activation="tanh"):
    init = dict(scheme=scheme, scale=scale)
    if bias_std is not None:
        init["bias_std"] = bias_std
    cfg = load_config(dict(model=dict(depth=1, width=width, activation=activation, init=init)))
    torch.manual_seed(0)
    block = build_model(cfg.model, dtype=torch.float64).blocks[0]
    return block.linear.weight.detach(), block.linear.bias.detach()


@pytest.mark.parametrize(
    "scheme,scale,std",
    [
        ("normal", 1.5, 1.5 / math.sqrt(400)),
        ("xavier", 2.0, 2.0 * math.sqrt(2 / 800)),
        ("kaiming", 0.5, 0.5 * math.sqrt(2 / 400)),
        ("default", 3.0, 3.0 / math.sqrt(3 * 400)),  # U(-1/sqrt(n), 1/sqrt(n)) has std 1/sqrt(3n)
    ],
)
def test_weight_std(scheme, scale, std):
    w, _ = weights(scheme, scale)
    assert w.std().item() == pytest.approx(std, rel=0.02)
    assert abs(w.mean().item()) < 3 * std / math.sqrt(w.numel()) * 3


def test_orthogonal_is_orthogonal_times_scale():
    w, _ = weights("orthogonal", 0.7, width=50)
    assert torch.allclose(w @ w.T, 0.49 * torch.eye(50, dtype=w.dtype), atol=1e-10)


def test_constant():
    w, b = weights("constant", 0.9, width=5)
    assert torch.all(w == 0.9)
    assert torch.all(b == 0)


def test_bias_std():
    _, b = weights("normal", bias_std=0.3, width=2000)
    assert b.std().item() == pytest.approx(0.3, rel=0.06)
    _, b0 = weights("normal", bias_std=0.0)
    assert torch.all(b0 == 0)
    _, b_default = weights("default", width=400)
    assert b_default.abs().max().item() <= 1 / math.sqrt(400)
    assert b_default.abs().max().item() > 0.5 / math.sqrt(400)
    _, b_xavier = weights("xavier")
    assert torch.all(b_xavier == 0)


def test_every_block_drawn_independently_and_shared_once():
    cfg = load_config(dict(model=dict(depth=3, width=8)))
    torch.manual_seed(0)
    model = build_model(cfg.model)
    a, b = model.blocks[0].linear.weight, model.blocks[1].linear.weight
    assert not torch.equal(a, b)
    shared = build_model(cfg.replace({"model.share_weights": True}).model)
    assert shared.blocks[0] is shared.blocks[2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(64, 64), (5, 37), (1, 1)])
def test_default_scheme_is_pytorchs_own_linear_init_bit_for_bit(shape, dtype):
    # the reference: nn.Linear's own reset_parameters (kaiming_uniform_(a=sqrt(5)), bias U(+-1/sqrt(fan_in)))
    torch.manual_seed(11)
    ref = torch.nn.Linear(shape[1], shape[0], dtype=dtype)
    w, b = torch.empty(shape, dtype=dtype), torch.empty(shape[0], dtype=dtype)
    torch.manual_seed(11)
    init_linears([(w, b)], load_config({"model": {"depth": 1, "width": 4}}).model.init)
    assert torch.equal(w, ref.weight) and torch.equal(b, ref.bias)
