"""Build a stack from a model config: blocks looked up in a plain dict, then initialised."""

from resflow.models.init import initialize
from resflow.models.mlp import MLPBlock
from resflow.models.stack import Stack
from resflow.models.transformer import TransformerBlock, final_norm

BLOCKS = {
    "mlp": MLPBlock,
    "transformer": TransformerBlock,
}


def build_model(cfg, device=None, dtype=None, init: bool = True) -> Stack:
    """A `Stack` of `cfg.depth` blocks, initialised per `cfg.init` (seed torch's RNG first).

    `init=False` skips `initialize` (a template whose weights are overwritten, as in resflow.measure.batched).
    """
    make = BLOCKS[cfg.block]
    if cfg.share_weights:
        block = make(cfg, device=device, dtype=dtype)
        blocks = [block] * cfg.depth
    else:
        blocks = [make(cfg, device=device, dtype=dtype) for _ in range(cfg.depth)]
    final = final_norm(cfg, device=device, dtype=dtype) if cfg.block == "transformer" else None
    model = Stack(blocks, final)
    if not init:
        return model
    initialize(model, cfg.init)
    for block in {id(b): b for b in blocks}.values():  # once per distinct block (shared weights)
        if hasattr(block, "init_branches"):
            block.init_branches()  # transformer: DeepNorm's beta, zero_out
    return model
