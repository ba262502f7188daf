"""A results dir as W&B runs (`resflow export DIR --to wandb [PROJECT]`): one run per variant and
seed, named `<variant>/seed_<n>` and grouped by variant, replayed through the W&B sink
(resflow.results.sinks.WandbRun) that `run --log-to wandb` writes live. `WANDB_MODE=offline`
writes the runs under ./wandb (or $WANDB_DIR) without a network, for `wandb sync` later.
"""

from __future__ import annotations

from resflow.report.export.runs import Exported, replay, runs, started
from resflow.results.sinks import WandbRun, check_wandb_project


def export(result, project: str) -> Exported:
    check_wandb_project(project)
    done = Exported(project)
    start = started(result)
    for run in runs(result):
        sink = WandbRun(project, run.name, run.hparams, run.config)
        replay(run, sink, start)
        done.scalars += sink.scalars
        done.runs.append(run.name)
    return done
