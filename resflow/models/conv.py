"""CIFAR-style ResNets (He et al. 2016, §4.2): `model.block: conv`, read top to bottom.

    image                                        (B, C_in, H, W)   digits: (B, 1, 8, 8)
    stem     3x3 conv to w channels              (B, w, H, W)      + norm, act (not pre-activation)
    stage 1  n blocks, w channels                (B, w, H, W)
    stage 2  n blocks, 2w channels, stride 2     (B, 2w, H/2, W/2) (the stage's first block strides)
    stage 3  n blocks, 4w channels, stride 2     (B, 4w, H/4, W/4)
    head     [norm, act: pre-activation] global average pool (B, 4w), linear (B, classes)
Depth 6n + 2: two convs in each of 3n blocks, the stem and the head (20, 32, 44, 56, 110).

A BasicBlock holds two 3x3 convs; with s the shortcut and α model.residual_scale:
    post-activation (the original)     x -> act(s(x) + α·norm(conv(act(norm(conv(x))))))
    pre-activation (He et al. 2016b)   x -> s(x) + α·conv(act(norm(conv(act(norm(x))))))
`model.residual: false` drops s(x): the plain net, with the same layers. s is the identity, or where a
stage changes shape (`model.shortcut`): 'pad' (option A: every other pixel, zero channels appended;
no parameters) or 'projection' (option B: a 1x1 conv of stride 2 and a norm). `model.norm: none`
drops every norm. Recording: one site per block (the stream entering it); the stem's parameters
are params.csv rows at layer -1, the head's at layer 3n.
"""

import torch.nn.functional as F
from torch import nn

from resflow.models.activations import ACTIVATIONS
from resflow.models.norms import make_norm
from resflow.models.stack import Site


def _norm(cfg, channels, kw):  # a norm over feature maps, or nothing with model.norm: none
    return make_norm(cfg, channels, image=True, **kw) if cfg.norm != "none" else nn.Identity()


class PadShortcut(nn.Module):
    """Option A: x[:, :, ::2, ::2] with c_out - c_in zero channels appended (no parameters)."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.extra = c_out - c_in

    def forward(self, x):  # (B, C, H, W) -> (B, C + extra, H/2, W/2)
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, self.extra))


class Projection(nn.Module):
    """Option B: a 1x1 conv of stride 2 and a norm."""

    def __init__(self, cfg, c_in, c_out, kw):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, stride=2, bias=cfg.bias, **kw)
        self.norm = _norm(cfg, c_out, kw)

    def forward(self, x):  # (B, C_in, H, W) -> (B, C_out, H/2, W/2)
        return self.norm(self.conv(x))


class BasicBlock(nn.Module):
    def __init__(self, cfg, c_in, c_out, stride, kw):
        super().__init__()
        self.preactivation, self.residual, self.alpha = cfg.preactivation, cfg.residual, cfg.residual_scale
        self.act = ACTIVATIONS[cfg.activation]
        self.norm1 = _norm(cfg, c_in if cfg.preactivation else c_out, kw)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=cfg.bias, **kw)
        self.norm2 = _norm(cfg, c_out, kw)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=cfg.bias, **kw)
        if not cfg.residual or (stride == 1 and c_in == c_out):
            self.shortcut = nn.Identity()
        else:
            self.shortcut = Projection(cfg, c_in, c_out, kw) if cfg.shortcut == "projection" else PadShortcut(c_in, c_out)

    def forward(self, x):  # (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)
        if self.preactivation:
            h = self.conv1(self.act(self.norm1(x)))  # (B, C_out, H', W')
            h = self.conv2(self.act(self.norm2(h)))  # (B, C_out, H', W')
            return self.shortcut(x) + self.alpha * h if self.residual else h
        h = self.act(self.norm1(self.conv1(x)))  # (B, C_out, H', W')
        h = self.norm2(self.conv2(h))  # (B, C_out, H', W')
        return self.act(self.shortcut(x) + self.alpha * h if self.residual else h)

    def sites(self, layer: int) -> list[Site]:
        return [Site(layer, "conv", self, tuple(self.named_parameters()))]


class Stem(nn.Module):
    def __init__(self, cfg, c_in, width, kw):
        super().__init__()
        self.conv = nn.Conv2d(c_in, width, 3, padding=1, bias=cfg.bias, **kw)
        # pre-activation: the first block normalises and activates its own input
        self.norm = _norm(cfg, width, kw) if not cfg.preactivation else nn.Identity()
        self.act = ACTIVATIONS[cfg.activation] if not cfg.preactivation else nn.Identity()

    def forward(self, x):  # (B, C_in, H, W) -> (B, w, H, W)
        return self.act(self.norm(self.conv(x)))


class Head(nn.Module):
    def __init__(self, cfg, channels, classes, kw):
        super().__init__()
        # pre-activation: the last block's output is not normalised yet (He et al. 2016b's final BN-ReLU)
        self.norm = _norm(cfg, channels, kw) if cfg.preactivation else nn.Identity()
        self.act = ACTIVATIONS[cfg.activation] if cfg.preactivation else nn.Identity()
        self.linear = nn.Linear(channels, classes, **kw)

    def forward(self, x):  # (B, 4w, H/4, W/4) -> (B, classes)
        x = self.act(self.norm(x)).mean(dim=(2, 3))  # global average pool: (B, 4w)
        return self.linear(x)  # (B, classes)


class ConvResNet(nn.Module):
    """stem -> 3 stages of n BasicBlocks -> head; `blocks` in order, as a Stack's."""

    def __init__(self, cfg, in_channels: int, classes: int, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        n, w = (cfg.depth - 2) // 6, cfg.width
        self.stem = Stem(cfg, in_channels, w, kw)
        blocks, c_in = [], w
        for stage, c_out in enumerate((w, 2 * w, 4 * w)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(cfg, c_in, c_out, stride, kw))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = Head(cfg, 4 * w, classes, kw)

    def forward(self, x):  # (B, C_in, H, W) -> (B, classes)
        x = self.stem(x)  # (B, w, H, W)
        for block in self.blocks:
            x = block(x)  # (B, w|2w|4w, ...)
        return self.head(x)  # (B, classes)

    def sites(self) -> list[Site]:
        """One site per block: the stream entering it."""
        return [site for layer, block in enumerate(self.blocks) for site in block.sites(layer)]

    def extra_params(self) -> list[tuple[int, str, nn.Parameter]]:
        """The stem's parameters at layer -1, the head's at layer 3n (after the last block)."""
        stem = [(-1, f"stem.{name}", p) for name, p in self.stem.named_parameters()]
        return stem + [(len(self.blocks), f"head.{name}", p) for name, p in self.head.named_parameters()]
