"""The opt-in primitives measured across the optimizer step (resflow.quantities.base): per parameter
`update` = ||theta_after - theta_before||, `before` = ||theta_before|| and `moved` = ||theta - theta_0||.

They cost copies of the parameters: `before()` keeps one for the step it is called around (freed
by `after()`), and `moved` needs one kept from the start (`track_moved=True`). The norms are
summed as `norms_as_floats` sums them (in the parameters' dtype, float64 where that may have
under/overflowed).
"""

from __future__ import annotations

import math

import torch

from resflow.measure.recorder import Record, norms_as_floats


class StepNorms:
    """Norms across optimizer steps of `params` (unique tensors), handed to a Record's params rows."""

    def __init__(self, params: list[torch.Tensor], track_moved: bool = False):
        self.params = list(params)
        self._initial = [p.detach().clone() for p in self.params] if track_moved else None
        self._before: list[torch.Tensor] | None = None

    @property
    def tracks_moved(self) -> bool:
        return self._initial is not None

    @torch.no_grad()
    def moved(self) -> list[float]:
        """||theta - theta_0|| per parameter (track_moved)."""
        return norms_as_floats(list(torch._foreach_sub([p.detach() for p in self.params], self._initial)))

    def before(self) -> None:
        """Copy the parameters: call just before the optimizer step."""
        self._before = [p.detach().clone() for p in self.params]

    @property
    def pending(self) -> bool:
        """Whether `before()` was called and `after()` not yet."""
        return self._before is not None

    @torch.no_grad()
    def after(self) -> tuple[list[float], list[float]]:
        """(update, before) per parameter, the copy freed: call just after the optimizer step."""
        before, self._before = self._before, None
        update = norms_as_floats(list(torch._foreach_sub([p.detach() for p in self.params], before)))
        return update, norms_as_floats(before)


def add_step(rec: Record, rows: list[int], update: list[float] | None, before: list[float] | None) -> None:
    """A Record's `update` and `before` primitives from per-parameter floats (`rows`: each params row's
    parameter index); NaN when no step followed (None)."""
    m = len(rows)
    rec.set_param("update", [update[i] for i in rows] if update is not None else [math.nan] * m)
    rec.set_param("before", [before[i] for i in rows] if before is not None else [math.nan] * m)
