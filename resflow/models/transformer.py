"""The transformer block: causal self-attention and an FFN, each inside one residual connection.

    pre-norm   x -> x + α·f(norm(x))       GPT-2 (with a norm after the last block)
    post-norm  x -> norm(x + α·f(x))       the original Transformer (Vaswani et al. 2017)
    none       x -> x + α·f(x)
    DeepNorm   x -> norm(a·x + f(x)), a = (2N)^(1/4); at init the value, output and FFN layers
               (weights and biases) are multiplied by β = (8N)^(-1/4) (Wang et al. 2022, N = depth)
    ReZero     α is a learnable scalar per sublayer, initialised to 0 (Bachlechner et al. 2020)
`model.residual: false` drops the x term. `init.zero_out` zeroes both output projections (microgpt).
Two residual connections per block, so two recording sites, "attn" and "ffn", each measured at the
residual-stream input of its `Residual`. Parameter names (params.csv) are relative to the block:
attn.{norm,q,k,v,out}.*, attn.alpha, ffn.{norm,up,gate,out}.*, ffn.alpha.
"""

import torch
import torch.nn.functional as F
from torch import nn

from resflow.models.norms import NORMS
from resflow.models.stack import Site

FFN_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}  # gelu: the exact (erf) GELU


def deepnorm_alpha(depth: int) -> float:  # DeepNet's skip scale a = (2N)^(1/4)
    return (2 * depth) ** 0.25


def deepnorm_beta(depth: int) -> float:  # DeepNet's init scale β = (8N)^(-1/4)
    return (8 * depth) ** -0.25


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg, **kw):
        super().__init__()
        C = cfg.width
        self.heads = cfg.heads
        self.q = nn.Linear(C, C, bias=cfg.bias, **kw)
        self.k = nn.Linear(C, C, bias=cfg.bias, **kw)
        self.v = nn.Linear(C, C, bias=cfg.bias, **kw)
        self.out = nn.Linear(C, C, bias=cfg.bias, **kw)

    def forward(self, x):  # (B, T, C)
        B, T, C = x.shape
        q, k, v = (p(x).view(B, T, self.heads, C // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class FFN(nn.Module):
    """out(act(up(x))), or SwiGLU: out(silu(gate(x)) * up(x)); hidden = round(ffn_mult * width)."""

    def __init__(self, cfg, **kw):
        super().__init__()
        C, H = cfg.width, max(1, round(cfg.ffn_mult * cfg.width))
        self.up = nn.Linear(C, H, bias=cfg.bias, **kw)
        self.gate = nn.Linear(C, H, bias=cfg.bias, **kw) if cfg.ffn == "swiglu" else None
        self.act = FFN_ACTIVATIONS.get(cfg.ffn)
        self.out = nn.Linear(H, C, bias=cfg.bias, **kw)

    def forward(self, x):  # (B, T, C)
        h = F.silu(self.gate(x)) * self.up(x) if self.gate is not None else self.act(self.up(x))  # (B, T, H)
        return self.out(h)  # (B, T, C)


class Residual(nn.Module):
    """One residual connection around the sublayer `f`, with its norm where `model.norm` puts it."""

    def __init__(self, f, cfg, **kw):
        super().__init__()
        self.norm = NORMS[cfg.norm_type](cfg.width, **kw) if cfg.norm != "none" else nn.Identity()
        self.f = f
        self.pre = cfg.norm == "pre"
        deepnorm = cfg.residual_scale == "deepnorm"
        self.skip = (deepnorm_alpha(cfg.depth) if deepnorm else 1.0) if cfg.residual else 0.0  # a on x
        if cfg.rezero:
            self.alpha = nn.Parameter(torch.zeros((), **kw))
        else:
            self.alpha = 1.0 if deepnorm else float(cfg.residual_scale)

    def forward(self, x):  # (B, T, C) -> (B, T, C); x is the residual stream
        if self.pre:
            return self.shortcut(x) + self.alpha * self.f(self.norm(x))  # x + α·f(norm(x))
        return self.norm(self.shortcut(x) + self.alpha * self.f(x))  # post: norm(x + α·f(x)); none: x + α·f(x)

    def shortcut(self, x):  # x; DeepNorm: a·x; with model.residual false: nothing
        return x if self.skip == 1.0 else self.skip * x if self.skip else 0.0


class TransformerBlock(nn.Module):
    def __init__(self, cfg, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.attn_res = Residual(CausalSelfAttention(cfg, **kw), cfg, **kw)
        self.ffn_res = Residual(FFN(cfg, **kw), cfg, **kw)
        self.beta = deepnorm_beta(cfg.depth) if cfg.residual_scale == "deepnorm" else 1.0
        self.zero_out = cfg.init.zero_out

    def forward(self, x):  # (B, T, C)
        x = self.attn_res(x)  # causal self-attention in its residual connection
        x = self.ffn_res(x)  # FFN in its residual connection
        return x

    def sites(self, layer: int) -> list[Site]:
        return [
            Site(layer, "attn", self.attn_res, tuple(_named(self.attn_res, "attn"))),
            Site(layer, "ffn", self.ffn_res, tuple(_named(self.ffn_res, "ffn"))),
        ]

    @torch.no_grad()
    def init_branches(self) -> None:
        """After the scheme's init: DeepNorm's β on v, out and the FFN, weights and biases; zero_out on
        both outputs. Biases too, as DeepNet's reference code (torchscale) divides every parameter of
        those layers by 1/β: with biases that are not zero (init.scheme default, init.bias_std) the
        branch f(x) = W·x + b is then β times its scheme's, as DeepNet's analysis takes it to be."""
        attn, ffn = self.attn_res.f, self.ffn_res.f
        if self.beta != 1.0:
            for lin in (attn.v, attn.out, ffn.up, ffn.gate, ffn.out):
                if lin is not None:
                    lin.weight.mul_(self.beta)
                    if lin.bias is not None:
                        lin.bias.mul_(self.beta)
        if self.zero_out:
            for lin in (attn.out, ffn.out):
                lin.weight.zero_()
                if lin.bias is not None:
                    lin.bias.zero_()


def _named(res: Residual, prefix: str):
    # norm.weight -> attn.norm.weight, f.q.weight -> attn.q.weight, alpha -> attn.alpha
    for name, p in res.named_parameters():
        yield f"{prefix}.{name.removeprefix('f.')}", p


def final_norm(cfg, device=None, dtype=None):
    """The norm after the last block (`model.final_norm`; unset: on for pre-norm), or None."""
    return NORMS[cfg.norm_type](cfg.width, device=device, dtype=dtype) if cfg.has_final_norm else None
