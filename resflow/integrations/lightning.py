"""`resflow.watch` inside a Lightning `Trainer`: add `ResflowCallback` to its callbacks.

    trainer = pytorch_lightning.Trainer(max_steps=100, callbacks=[ResflowCallback(out="results/pl", every=10)])
    trainer.fit(module, data)

The LightningModule is watched from `on_train_start`; a watched step ends at
`on_before_optimizer_step`, once per optimizer step whatever `accumulate_grad_batches` is (so the
micro-batches' forwards are one step), before Lightning clips the gradients. The step's loss is the
sum of the losses `on_before_backward` receives (Lightning has divided each by the number of
micro-batches). With a TensorBoardLogger, the per-layer scalars go to its `log_dir` too. Uses
`pytorch_lightning` (the `lightning` extra), else the `lightning` package's `lightning.pytorch`.
"""

from __future__ import annotations

try:
    import pytorch_lightning as pl
except ImportError:  # the unified `lightning` package
    import lightning.pytorch as pl

from resflow.integrations._session import StepSession


class ResflowCallback(pl.Callback):
    """Watch the LightningModule (`resflow.watch`'s arguments: out, every, blocks, name, force,
    in_memory; tensorboard: "auto" = the TensorBoardLogger's log_dir when the trainer has one).
    `.watch` is the Watch (its tables: `.watch.grads`, ...) once training has started."""

    def __init__(
        self, out=None, *, every: int = 1, blocks=None, name=None, force: bool = False, tensorboard="auto", in_memory=True
    ):
        self.kwargs = dict(out=out, every=every, blocks=blocks, name=name, force=force, in_memory=in_memory)
        self.tensorboard = tensorboard
        self.session: StepSession | None = None

    @property
    def watch(self):
        return self.session.watch if self.session is not None else None

    def on_train_start(self, trainer, pl_module):
        tensorboard = self.tensorboard
        if tensorboard == "auto":
            logger = trainer.logger
            tensorboard = logger.log_dir if isinstance(logger, pl.loggers.TensorBoardLogger) else None
        self.session = StepSession(pl_module, {**self.kwargs, "tensorboard": tensorboard})

    def on_before_backward(self, trainer, pl_module, loss):
        if self.session is not None:
            self.session.micro_batch_loss(loss)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.session is not None:
            self.session.optimizer_step()

    def on_train_end(self, trainer, pl_module):
        self._close()

    def on_exception(self, trainer, pl_module, exception):
        self._close(exception)

    def _close(self, exc=None) -> None:
        if self.session is not None:
            self.session.close(exc)
