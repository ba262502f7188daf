"""What every bundled dataset loads into: one small record of CPU tensors, split into train and test."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Dataset(NamedTuple):
    name: str
    train_x: torch.Tensor  # (N_train, C, H, W) float64, standardised
    train_y: torch.Tensor  # (N_train,) int64 class labels
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """One example's image shape (C, H, W)."""
        return tuple(self.train_x.shape[1:])
