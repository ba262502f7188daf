"""Real datasets, bundled with a package (nothing is downloaded at run time): one small module each.

`load(name)` -> Dataset: float64 CPU tensors, images (N, C, H, W) and labels (N,), split once and for
all into train and test. `Batches` draws training batches from an explicit generator.
"""

from __future__ import annotations

import torch

from resflow.measure.datasets import digits
from resflow.measure.datasets.dataset import Dataset

DATASETS = {"digits": digits.load}  # name -> loader (cached by the loader)


def load(name: str) -> Dataset:
    return DATASETS[name]()


def as_input(x: torch.Tensor, images: bool) -> torch.Tensor:
    """Images (B, C, H, W) as a model takes them: unchanged for one of `images` (a conv net), else
    flattened (B, C*H*W) (the block family says which: `cfg.model.images`)."""
    return x if images else x.flatten(1)


class Batches:
    """Training batches without replacement: each epoch a fresh permutation of the training set,
    drawn from `gen` (so a seed gives the same batches to every model); a batch never spans epochs."""

    def __init__(self, data: Dataset, gen: torch.Generator):
        self.data, self.gen = data, gen
        self._order, self._at = torch.empty(0, dtype=torch.long), 0

    def next(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.data.train_y)
        size = min(batch_size, n)
        if self._at + size > len(self._order):
            self._order, self._at = torch.randperm(n, generator=self.gen), 0
        idx = self._order[self._at : self._at + size]
        self._at += size
        return self.data.train_x[idx], self.data.train_y[idx]
