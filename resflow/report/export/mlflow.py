"""A results dir as MLflow runs (`resflow export DIR --to mlflow [TRACKING_URI]`): one run per
variant and seed in the experiment named for the results dir, replayed through the MLflow sink
(resflow.results.sinks.MLflowRun) that `run --log-to mlflow` writes live. The URI defaults to
MLflow's own ($MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the current directory).
"""

from __future__ import annotations

from resflow.report.export.runs import Exported, replay, runs, started
from resflow.results.sinks import MLflowRun, check_mlflow_uri


def export(result, uri: str | None, experiment: str) -> Exported:
    from mlflow import get_tracking_uri

    check_mlflow_uri(uri)
    done = Exported(uri or get_tracking_uri())
    start = started(result)
    for run in runs(result):
        sink = MLflowRun(uri, experiment, run.name, run.hparams, run.config)
        replay(run, sink, start)
        done.scalars += sink.scalars
        done.runs.append(run.name)
    return done
