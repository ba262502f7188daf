"""Build a stack from a model config: blocks looked up in a plain dict, then initialised."""

from resflow.models.init import initialize
from resflow.models.mlp import MLPBlock
from resflow.models.stack import Stack

BLOCKS = {
    "mlp": MLPBlock,
}


def build_model(cfg, device=None, dtype=None) -> Stack:
    """A `Stack` of `cfg.depth` blocks, initialised per `cfg.init` (seed torch's RNG first)."""
    make = BLOCKS[cfg.block]
    if cfg.share_weights:
        block = make(cfg, device=device, dtype=dtype)
        blocks = [block] * cfg.depth
    else:
        blocks = [make(cfg, device=device, dtype=dtype) for _ in range(cfg.depth)]
    model = Stack(blocks)
    initialize(model, cfg.init)
    return model
