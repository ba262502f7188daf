"""TensorBoard event files from a results dir (`resflow export DIR --to tensorboard [LOGDIR]`).

One run per variant and seed, `LOGDIR/<variant>/seed_<n>/`, each replayed step by step through the
TensorBoard sink that `run --tensorboard` and `resflow.watch(log_to=...)` write live
(resflow.results.tensorboard_events: the tags, HParams, the custom-scalars layout), so an export
and a live log hold the same events. Wall times are the run's own (meta.json's start plus
train.csv's wall_time_s).
"""

from __future__ import annotations

from pathlib import Path

from resflow.report.export.runs import Exported, replay, runs, started
from resflow.results.tensorboard_events import TensorBoardRun


def export(result, logdir: Path, mark=None) -> Exported:
    """Each run replayed into LOGDIR/<run>; `mark(run)` (the export's mark) is told before a run is written."""
    done = Exported(Path(logdir))
    start = started(result)
    for run in runs(result):
        if mark is not None:
            mark(run.name)
        sink = TensorBoardRun(Path(logdir) / run.name, run.hparams, run.config, wall_time=start)
        replay(run, sink, start)
        done.scalars += sink.scalars
        done.histograms += sink.histograms
        done.runs.append(run.name)
    return done
