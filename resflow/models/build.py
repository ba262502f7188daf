"""Build a model from a model config: blocks looked up in a plain dict, then initialised."""

from resflow.models.conv import ConvResNet
from resflow.models.init import initialize
from resflow.models.mlp import MLPBlock
from resflow.models.stack import Classifier, Stack
from resflow.models.transformer import TransformerBlock, final_norm

BLOCKS = {
    "mlp": MLPBlock,
    "transformer": TransformerBlock,
}
IMAGE = ((1, 8, 8), 10)  # a conv net's input (channels, height, width) and classes unless told


def build_model(cfg, device=None, dtype=None, init: bool = True, io: tuple | None = None):
    """A `Stack` of `cfg.depth` blocks, initialised per `cfg.init` (seed torch's RNG first).

    `io` = (input shape of one example, classes) makes a classifier: a conv ResNet (images (C, H, W);
    conv blocks are always one, of (1, 8, 8) images and 10 classes unless told), or for mlp blocks
    a linear stem (features -> width), the stack and a linear head (width -> classes).
    `init=False` skips `initialize` (a template whose weights are overwritten, as in resflow.measure.batched).
    """
    if cfg.block == "conv":
        shape, classes = io or IMAGE
        model = ConvResNet(cfg, shape[0], classes, device=device, dtype=dtype)
        if init:
            initialize(model, cfg.init)
        return model
    make = BLOCKS[cfg.block]
    if cfg.share_weights:
        block = make(cfg, device=device, dtype=dtype)
        blocks = [block] * cfg.depth
    else:
        blocks = [make(cfg, device=device, dtype=dtype) for _ in range(cfg.depth)]
    final = final_norm(cfg, device=device, dtype=dtype) if cfg.block == "transformer" else None
    model = Stack(blocks, final)
    if io is not None:
        (features,), classes = io
        model = Classifier(model, features, classes, device=device, dtype=dtype)
    if not init:
        return model
    initialize(model, cfg.init)
    for block in {id(b): b for b in blocks}.values():  # once per distinct block (shared weights)
        if hasattr(block, "init_branches"):
            block.init_branches()  # transformer: DeepNorm's beta, zero_out
    return model
