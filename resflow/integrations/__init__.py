"""Trainer callbacks that run `resflow.watch` inside a framework's own training loop.

    from resflow.integrations.huggingface import ResflowCallback   # transformers.Trainer
    from resflow.integrations.lightning import ResflowCallback     # pytorch_lightning.Trainer

Each watches the trainer's model from the start of training, passes each optimizer step's loss,
and ends a watched step at the optimizer step (not at each micro-batch: with gradient accumulation
the micro-batches' forwards and backwards are one step), writing `out` as `resflow.watch` does.
The frameworks are imported only by their own module (the `hf` and `lightning` extras).
"""
