"""The MLP block: a width -> width linear layer and an activation, with optional residual and norm.

    plain      x -> phi(W x + b)
    residual   x -> x + alpha * phi(W x + b)
    pre-norm   x -> x + alpha * phi(W norm(x) + b)
    post-norm  x -> norm(x + alpha * phi(W x + b))
With `preactivation`, phi(W u + b) becomes W phi(u) + b (He et al. 2016, ResNet-v2).
"""

from torch import nn

from resflow.models.activations import ACTIVATIONS
from resflow.models.norms import make_norm
from resflow.models.stack import Site


class MLPBlock(nn.Module):
    def __init__(self, cfg, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.linear = nn.Linear(cfg.width, cfg.width, bias=cfg.bias, **kw)
        self.pre = make_norm(cfg, cfg.width, **kw) if cfg.norm == "pre" else nn.Identity()
        self.post = make_norm(cfg, cfg.width, **kw) if cfg.norm == "post" else nn.Identity()
        self.act = ACTIVATIONS[cfg.activation]
        self.preactivation = cfg.preactivation
        self.residual = cfg.residual
        self.alpha = cfg.residual_scale

    def branch(self, u):  # f(u): (B, W) -> (B, W)
        return self.linear(self.act(u)) if self.preactivation else self.act(self.linear(u))

    def forward(self, x):  # x: (B, W)
        h = self.branch(self.pre(x))  # pre-norm: f(norm(x)); otherwise f(x)
        y = x + self.alpha * h if self.residual else h
        return self.post(y)  # post-norm: norm(y); otherwise y

    def sites(self, layer: int) -> list[Site]:
        return [Site(layer, "mlp", self, tuple(self._named_params()))]

    def _named_params(self):
        # names as they read in the block: linear.weight, linear.bias, norm.weight, norm.bias; the
        # order of named_parameters() (tested), without its recursive walk (a Recorder per step)
        modules = self._modules  # (not three nn.Module.__getattr__ lookups)
        for prefix, key in (("linear", "linear"), ("norm", "pre"), ("norm", "post")):
            for name, p in modules[key]._parameters.items():
                if p is not None:
                    yield f"{prefix}.{name}", p
