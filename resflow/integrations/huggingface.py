"""`resflow.watch` inside a Hugging Face `transformers.Trainer`: add `ResflowCallback` to its callbacks.

    trainer = Trainer(model, args, train_dataset=..., callbacks=[ResflowCallback(out="results/hf", every=10)])
    trainer.train()

The model is watched from `on_train_begin`; a watched step ends at `on_pre_optimizer_step`, once per
optimizer step whatever `gradient_accumulation_steps` is, so the micro-batches' forwards are one
step. The Trainer passes no loss to callbacks, so each training forward's `loss` output is taken
(a forward hook on the model) and summed as the Trainer scales it: each micro-batch's loss divided
by their number, unless the model got `num_items_in_batch` (then already normalised over the whole
step). Note: `on_pre_optimizer_step` comes after the Trainer's gradient clipping (`max_grad_norm`,
1.0 by default), so params.csv's gradient norms are of the clipped gradients the optimizer applies,
while the block input gradients are those of the backward. With "tensorboard" in `args.report_to`,
the per-layer scalars go to the Trainer's TensorBoard dir too when it is known ahead
(`args.logging_dir` in transformers 4, $TENSORBOARD_LOGGING_DIR in 5; else pass tensorboard=LOGDIR).
"""

from __future__ import annotations

import os

import torch
from transformers import TrainerCallback

from resflow.integrations._session import StepSession


def trainer_logdir(args) -> str | None:
    """Where the Trainer's TensorBoard writes when it reports to TensorBoard and the place is known
    ahead: `args.logging_dir` (transformers 4), $TENSORBOARD_LOGGING_DIR (transformers 5); else None
    (transformers 5 picks a dated dir inside its own callback: pass tensorboard=LOGDIR yourself)."""
    report_to = args.report_to or []
    if "tensorboard" not in report_to and report_to != "all" and "all" not in report_to:
        return None
    return getattr(args, "logging_dir", None) or os.environ.get("TENSORBOARD_LOGGING_DIR") or None


class ResflowCallback(TrainerCallback):
    """Watch the Trainer's model (`resflow.watch`'s arguments: out, every, blocks, name, force,
    in_memory; tensorboard: "auto" = the Trainer's logging dir when it reports to TensorBoard).
    `.watch` is the Watch (its tables: `.watch.grads`, ...) once training has begun."""

    def __init__(
        self, out=None, *, every: int = 1, blocks=None, name=None, force: bool = False, tensorboard="auto", in_memory=True
    ):
        self.kwargs = dict(out=out, every=every, blocks=blocks, name=name, force=force, in_memory=in_memory)
        self.tensorboard = tensorboard
        self.session: StepSession | None = None
        self._losses: list[tuple[torch.Tensor, bool]] = []
        self._handle = None

    @property
    def watch(self):
        return self.session.watch if self.session is not None else None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        tensorboard = self.tensorboard
        if tensorboard == "auto":
            tensorboard = trainer_logdir(args)
        self.session = StepSession(model, {**self.kwargs, "tensorboard": tensorboard})
        self._handle = model.register_forward_hook(self._on_forward, with_kwargs=True)

    def _on_forward(self, module, args, kwargs, output):
        if not (torch.is_grad_enabled() and module.training):
            return  # an evaluation forward
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._losses.append((loss.detach().reshape(()), kwargs.get("num_items_in_batch") is not None))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        n = len(self._losses)
        for loss, normalised in self._losses:
            self.session.micro_batch_loss(loss if normalised else loss / n)
        self._losses = []
        self.session.optimizer_step()

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """End the watch (write `out`, remove every hook): done by `on_train_end`; call it yourself
        if `trainer.train()` raised (the Trainer has no callback event for an error)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.session is not None:
            self.session.close()
