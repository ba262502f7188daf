"""Training tasks that need no download: batches drawn from an explicit generator, a loss, a floor.

    teacher   regress y = T(x), T a fixed random network width -> width (one tanh hidden layer of
              the same width), its outputs standardised to zero mean and unit variance per output;
              x as `data.input` says. Loss: mean squared error. Floor 0 (the target is noise-free);
              the best constant prediction scores ~1, so a loss stuck near 1 means nothing was learnt.

Everything random (the teacher, the inputs) comes from the generator handed in, in float64 on the
CPU, then is cast: the same seed gives the same task and the same batches to every model and dtype.
"""

from __future__ import annotations

import torch

from resflow.data import make_input

STANDARDISE_SAMPLES = 8192  # inputs drawn once to standardise the teacher's outputs


class TeacherTask:
    """A fixed random teacher y = standardise(W2 tanh(W1 x + b1) + b2); MSE loss."""

    name = "teacher"
    floor = 0.0  # the lowest achievable loss
    baseline = 1.0  # the loss of the best constant prediction (outputs have unit variance)

    def __init__(self, cfg, gen: torch.Generator, device, dtype):
        w = cfg.model.width
        self.data_cfg, self.width, self.device, self.dtype = cfg.data, w, device, dtype
        self.w1 = torch.randn(w, w, generator=gen, dtype=torch.float64) / w**0.5 * 2.0  # gain 2: non-linear
        self.b1 = torch.randn(w, generator=gen, dtype=torch.float64) * 0.5
        self.w2 = torch.randn(w, w, generator=gen, dtype=torch.float64) / w**0.5
        sample = self._raw(torch.randn(STANDARDISE_SAMPLES, w, generator=gen, dtype=torch.float64)
                           * max(cfg.data.input_scale, 1e-12))
        self.mean, self.std = sample.mean(0), sample.std(0).clamp_min(1e-12)

    def _raw(self, x):  # (B, W) float64 -> (B, W)
        return torch.tanh(x @ self.w1.T + self.b1) @ self.w2.T

    def batch(self, gen: torch.Generator, batch_size: int):
        """(x, y) on the task's device and dtype; x: (B, W), y: (B, W)."""
        x = make_input(self.data_cfg, (batch_size, self.width), gen)
        y = (self._raw(x) - self.mean) / self.std
        cast = dict(device=self.device, dtype=self.dtype)
        return x.to(**cast), y.to(**cast)

    def wrap(self, stack):
        """The model trained on this task: the stack itself (width -> width)."""
        return stack

    @staticmethod
    def loss(out, y):
        return (out - y).pow(2).mean()


TASKS = {
    "teacher": TeacherTask,
}


def make_task(cfg, gen: torch.Generator, device, dtype):
    return TASKS[cfg.train.task](cfg, gen, device, dtype)
