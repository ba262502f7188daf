"""Build a model from a model config: the family's builder looked up in a plain dict, then initialised.

`BLOCKS` is the torch half of the block-family registry (the config half, with each family's keys,
is resflow.config.families): `model.block` -> a builder (cfg, device, dtype, io) -> nn.Module.
"""

from resflow.models.conv import ConvResNet
from resflow.models.highway import HighwayBlock
from resflow.models.init import initialize
from resflow.models.mlp import MLPBlock
from resflow.models.stack import Classifier, Stack
from resflow.models.transformer import TransformerBlock, final_norm

IMAGE = ((1, 8, 8), 10)  # a conv net's input (channels, height, width) and classes unless told


def stacked(make, final=None):
    """A builder of `cfg.depth` blocks made by `make(cfg, device=, dtype=)` (one shared block with
    `share_weights`), then `final(cfg, ...)` (a norm, or None); a classifier on a dataset (`io`)."""

    def build(cfg, device=None, dtype=None, io=None):
        if cfg.share_weights:
            blocks = [make(cfg, device=device, dtype=dtype)] * cfg.depth
        else:
            blocks = [make(cfg, device=device, dtype=dtype) for _ in range(cfg.depth)]
        model = Stack(blocks, final(cfg, device=device, dtype=dtype) if final else None)
        if io is not None:
            (features,), classes = io
            model = Classifier(model, features, classes, device=device, dtype=dtype)
        return model

    return build


def conv_resnet(cfg, device=None, dtype=None, io=None):
    """A whole CIFAR-style ResNet (conv blocks are always one), of (1, 8, 8) images and 10 classes unless told."""
    shape, classes = io or IMAGE
    return ConvResNet(cfg, shape[0], classes, device=device, dtype=dtype)


BLOCKS = {
    "mlp": stacked(MLPBlock),
    "transformer": stacked(TransformerBlock, final_norm),
    "conv": conv_resnet,
    "highway": stacked(HighwayBlock),
}


def build_model(cfg, device=None, dtype=None, init: bool = True, io: tuple | None = None):
    """The model of `cfg` (a model config), initialised per `cfg.init` (seed torch's RNG first).

    `io` = (input shape of one example, classes) makes a classifier: a conv ResNet (images (C, H, W)),
    or for stacked blocks a linear stem (features -> width), the stack and a linear head (width -> classes).
    `init=False` skips `initialize` (a template whose weights are overwritten, as in resflow.measure.batched).
    """
    model = BLOCKS[cfg.block](cfg, device=device, dtype=dtype, io=io)
    if not init:
        return model
    initialize(model, cfg.init)
    for block in {id(b): b for b in getattr(model, "blocks", ())}.values():  # once per distinct block
        if hasattr(block, "init_branches"):
            block.init_branches()  # after the scheme's init: transformer DeepNorm's beta, zero_out; highway's gate bias
    return model
