"""scikit-learn's handwritten digits (load_digits): 1,797 grey 8x8 images of the digits 0-9, shipped
inside scikit-learn (the UCI optdigits test set), so nothing is fetched.

Pixels (0..16) are standardised with the training images' mean and standard deviation (one number
each, over all pixels). A fixed split, the same for every seed and run: 1,438 train, 359 test
(a permutation from SPLIT_SEED).
"""

from __future__ import annotations

import functools

import torch

from resflow.errors import ResflowError
from resflow.measure.datasets.dataset import Dataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@functools.cache
def load():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ResflowError("data.dataset: 'digits' needs scikit-learn: pip install 'resflow[data]'", exit_code=2) from None
    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float64).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.as_tensor(bunch.target, dtype=torch.long)  # (1797,)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = round(TEST_FRACTION * len(y))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return Dataset("digits", x[train], y[train], x[test], y[test], classes=10)
