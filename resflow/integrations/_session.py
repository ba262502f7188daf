"""What both callbacks share: a `Watch` entered at the start of training, the losses of one
optimizer step's micro-batches summed as the framework scaled them, `w.step` at the optimizer step."""

from __future__ import annotations

import torch

from resflow.anymodel import Watch


class StepSession:
    """One training run under a Watch: `micro_batch_loss` per backward, `optimizer_step` per step."""

    def __init__(self, model, watch_kwargs: dict):
        self.watch = Watch(model, **watch_kwargs)
        self.watch.__enter__()
        self.losses: list[torch.Tensor] = []
        self.micro_batches = 0

    def micro_batch_loss(self, loss) -> None:
        """The loss of one micro-batch as it was back-propagated (already divided by the number of
        micro-batches where the framework does so): the step's loss is their sum."""
        self.micro_batches += 1
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self.losses.append(loss.detach().reshape(()))

    def optimizer_step(self) -> None:
        loss = torch.stack(self.losses).sum() if self.losses else None
        self.losses, self.micro_batches = [], 0
        self.watch.step(loss)

    def close(self, exc: BaseException | None = None) -> None:
        if self.watch.running:
            self.watch.__exit__(type(exc) if exc else None, exc, None)
