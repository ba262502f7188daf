"""The `resflow` command: one short function per command over the library.

Heavy libraries (torch, pandas) are imported inside the commands, so `--help` is instant.
`ResflowError` becomes a one-line message on stderr and its exit code, in one place: `_command`.
"""

from __future__ import annotations

import functools
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from resflow._version import __version__
from resflow.config.limits import MAX_SEEDS
from resflow.errors import FigureError, ResflowError

try:  # the base of click's usage errors; recent Typer vendors click and exposes it as TyperException
    _ClickError = typer.TyperException
except AttributeError:  # pragma: no cover - older Typer on top of click
    from click import ClickException as _ClickError
_PASS_THROUGH = (typer.Exit, typer.Abort, _ClickError)  # Typer's own control flow


class _OneLineErrors(TyperGroup):
    """Usage errors (a missing argument, `--seeds abc`, an unknown option) as one line on stderr,
    like every other error, instead of a boxed panel; exit code 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _ClickError as err:
            ctx = getattr(err, "ctx", None)
            if type(err).__name__ == "NoArgsIsHelpError":  # bare `resflow`: the help, as usual
                typer.echo(ctx.get_help(), err=True)
                sys.exit(err.exit_code)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = " ".join(err.format_message().split())
            stderr().print(_error_line(f"error: {message}{hint}"), markup=False)
            sys.exit(err.exit_code)
        except typer.Abort:
            stderr().print("aborted", markup=False)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="resflow",
    help="Gradient-flow experiments: what residuals, norm placement, activations and init do to "
    "the gradient that reaches each layer.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: `run --help` skips typer.rich_utils (a slow import)
    context_settings={"help_option_names": ["-h", "--help"]},
)


def stdout() -> Console:
    """Where tables and results go: data printed as text (resflow.report.terminal.console). On a
    terminal, the terminal's width; piped or redirected (`> out.txt`, `| less`), wide enough that no
    table cell is ever cut (`fit_width` keeps honouring `COLUMNS`)."""
    from resflow.report.terminal.console import PlainConsole

    console = PlainConsole()
    return console if console.is_terminal else PlainConsole(width=_UNCUT)


_UNCUT = 100_000  # a piped console's width: every table at least at its natural width, no line wrapped


def fit_width(console) -> int:
    """The width tables choose their columns for: the terminal's; piped, `COLUMNS` if set (a table
    that cannot fit even then prints whole, wider than that), otherwise no limit."""
    if console.is_terminal:
        return console.width
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else console.width


def stderr() -> Console:
    """Where errors and progress go: text, never markup or control codes."""
    from resflow.report.terminal.console import PlainConsole

    return PlainConsole(stderr=True, highlight=False, soft_wrap=True)


def _error_line(text: str) -> str:
    """An error message as printed: one line of at most ~2,000 characters (a huge --set value is cut)."""
    from resflow.report.terminal.console import capped

    return capped(str(text))


def _command(fn):
    """Map errors to a one-line message on stderr and an exit code; the one place that does.

    ResflowError: its message and code (2 usage/config, 1 runtime, 3 a figure that could not be drawn
    while the results were written: then the traceback is saved to a file too). Ctrl-C / SIGTERM: a clean stop,
    128 + the signal (130, 143). Anything else is a bug: one line, the traceback saved to a file
    (RESFLOW_DEBUG=1 shows it instead), exit 1.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from resflow._sys.signals import exit_code, signal_name, stop_on_signals
        from resflow.cli.streams import guarded_stdout

        try:
            with stop_on_signals(), guarded_stdout():
                return fn(*args, **kwargs)
        except ResflowError as err:
            prefix = "" if err.exit_code >= 128 else "error: "  # an interrupt is not an error
            text = str(err)
            if isinstance(err, FigureError):  # a bug, as below, but the results are written: exit 3
                text += f" (traceback in {_crash_report(err.failed[0][1])})"
            stderr().print(_error_line(f"{prefix}{text}"), markup=False)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt as err:
            stderr().print(f"interrupted ({signal_name(err)}): stopped cleanly; nothing was written", markup=False)
            raise typer.Exit(exit_code(err)) from None
        except _PASS_THROUGH:
            raise
        except BrokenPipeError:  # `resflow ... | head`: the reader left; results are already written
            _silence_stdout()
            raise typer.Exit(1) from None  # quietly, with Rich's (and Python's docs') exit code for this
        except MemoryError:
            stderr().print("error: out of memory; reduce model.width, model.depth, data.batch_size or seeds", markup=False)
            raise typer.Exit(1) from None
        except Exception as err:  # noqa: BLE001 - the last line of defence: report, never a traceback
            from resflow.errors import environment_error

            fault = environment_error(err, doing="")  # a full disk, a name too long: the environment, not a bug
            if fault is not None:
                stderr().print(_error_line(f"error: {fault}"), markup=False)
                raise typer.Exit(fault.exit_code) from None
            if os.environ.get("RESFLOW_DEBUG"):
                raise
            if isinstance(err, RuntimeError) and "alloc" in str(err).lower() and "memory" in str(err).lower():
                stderr().print("error: out of memory; reduce model.width, model.depth, data.batch_size or seeds", markup=False)
                raise typer.Exit(1) from None
            report = _crash_report(err)
            first = (str(err).strip().splitlines() or [""])[0][:200]
            stderr().print(
                f"error: internal error, a bug in resflow: {type(err).__name__}: {first} "
                f"(traceback in {report}; RESFLOW_DEBUG=1 shows it)",
                markup=False,
            )
            raise typer.Exit(1) from None

    return wrapper


def _silence_stdout() -> None:
    from resflow.cli.streams import silence_stdout

    silence_stdout()


def _with_seeds(set_: list[str], seeds: int | None) -> list[str]:
    """The --set overrides, then `--seeds N` as the override it stands for (seeds=N)."""
    return list(set_) + ([f"seeds={seeds}"] if seeds is not None else [])


def _load_torch() -> None:
    """Set the process up (resflow._sys.allocator.settle_process: malloc settings, torch imported, imports
    frozen) with Ctrl-C/SIGTERM held back until it is done: an interrupt in the middle of torch's
    import leaves it half-initialised, and the interpreter can then abort (SIGABRT) on its way out
    instead of exiting 130. The signal acts as soon as the import is complete."""
    from resflow._sys.allocator import settle_process
    from resflow._sys.signals import deferred

    with deferred():
        settle_process("resflow.experiment")  # malloc settings; torch, pandas, resflow imported and frozen


@contextmanager
def _writing(out: Path, force: bool):
    """Hold the results-dir lock of `out` for the block (refused if another live resflow holds it),
    check `out` again under it, and import torch there, with signals held back over the import."""
    from resflow._sys.locks import results_lock
    from resflow.results.files import check_out_dir

    with results_lock(out, note=lambda text: stderr().print(text, markup=False)):
        check_out_dir(out, force)  # again, now that no other resflow can be writing it
        _load_torch()
        yield


def _crash_report(err: BaseException) -> str:
    """Write the traceback (and the command) to a file in the temp dir; return its path."""
    import tempfile
    import time
    import traceback

    text = f"resflow {__version__}: {' '.join(sys.argv)}\n\n" + "".join(traceback.format_exception(err))
    try:
        fd, path = tempfile.mkstemp(prefix=f"resflow-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return path
    except OSError:
        return "(could not be saved)"


def _version(value: bool):
    if value:
        typer.echo(f"resflow {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
):
    """Run `resflow COMMAND --help` for a command's options."""


def _complete_config(incomplete: str) -> list[str]:
    """Shell completion of CONFIG: the bundled config names, then YAML files and dirs, that start with
    what is typed (`resflow run de<TAB>` -> deep50, deep50-residual, ...)."""
    import glob

    from resflow.config.loading import bundled_config_names

    names = [n for n in bundled_config_names() if n.startswith(incomplete)]
    paths = sorted(glob.glob(glob.escape(incomplete) + "*"))
    paths = [p + "/" if os.path.isdir(p) else p for p in paths if os.path.isdir(p) or p.endswith((".yaml", ".yml"))]
    return names + paths


SET_HELP = "Override a config key, e.g. --set model.depth=100 (repeatable; values read as YAML)."
ALLOW_CODE_HELP = (
    "Let the config's model.factory import and call a module:callable (runs that code; trust the config first). "
    "Also: RESFLOW_ALLOW_CODE=1. hf: factories and installed packages' registered ones need neither."
)


def _allow_code_option():
    return typer.Option(False, "--allow-code", help=ALLOW_CODE_HELP)


class TableFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"
    both = "both"


FORMAT_HELP = 'The tables as csv, parquet (pip install "resflow[parquet]") or both.'


def _format_option():
    return typer.Option(TableFormat.csv, "--format", metavar="FORMAT", help=FORMAT_HELP)


@app.command()
@_command
def run(
    config: str = typer.Argument(
        ...,
        metavar="CONFIG",
        help="A YAML path, or the name of a bundled config (e.g. deep50).",
        autocompletion=_complete_config,
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR", help="Results dir [default: results/<name>]."),
    set_: List[str] = typer.Option([], "--set", metavar="KEY=VALUE", help=SET_HELP),
    seeds: Optional[int] = typer.Option(
        None, "--seeds", min=1, max=MAX_SEEDS, metavar="N", help="Number of seeds (overrides the config's `seeds`)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing results dir."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Write no figures (profile.png, params.png)."),
    format_: TableFormat = _format_option(),
    tensorboard: Optional[Path] = typer.Option(
        None,
        "--tensorboard",
        metavar="LOGDIR",
        help="Training runs: log to TensorBoard live what `export --to tensorboard` writes (LOGDIR/<name>/seed_<n>).",
    ),
    log_to: List[str] = typer.Option(
        [],
        "--log-to",
        metavar="TRACKER",
        help="Training runs: log live to tensorboard:LOGDIR, wandb[:PROJECT] or mlflow[:TRACKING_URI] (repeatable).",
    ),
    allow_code: bool = _allow_code_option(),
):
    """Measure per-layer gradient norms at initialisation (or train, with train.steps > 0); write CSVs and figures, print the table."""
    from resflow._sys.code import check, code_allowed
    from resflow.config.loading import load_config
    from resflow.config.memory import check_memory
    from resflow.results.files import check_format, check_out_dir, write_run
    from resflow.theory.overlay import comparison_line

    fmt = format_.value
    check_format(fmt)
    overrides = _with_seeds(set_, seeds)
    cfg = load_config(config, overrides)
    allowed = code_allowed(True if allow_code else None)
    check(cfg.model.factory, allowed)  # before anything is made or imported
    out = out or Path("results") / cfg.name
    check_out_dir(out, force)
    check_memory(cfg)
    specs = ([f"tensorboard:{tensorboard}"] if tensorboard is not None else []) + list(log_to)
    if specs and not cfg.train.steps:
        from resflow.errors import ConfigError

        raise ConfigError(
            "--tensorboard/--log-to: log a training run live (train.steps > 0); "
            "for any results dir use 'resflow export DIR --to tensorboard|wandb|mlflow'"
        )
    if specs:
        from resflow.results.sinks import check_spec

        for spec in specs:
            check_spec(spec, cfg.name)  # before anything is written: the package, the project name, the URI
        if tensorboard is not None:
            from resflow.results.tensorboard_events import check_run_logdir

            check_run_logdir(tensorboard / cfg.name, force)  # that run logged before: replaced with --force only
    with _writing(out, force):
        if cfg.train.steps:
            return _train(cfg, out, force, no_plots, fmt, specs)

        from resflow.experiment import run as run_experiment
        from resflow.report.terminal.run import headline, run_table, run_title

        result = run_experiment(cfg, allow_code=True) if allowed else run_experiment(cfg)
        figures = _figure_writer(result, no_plots)
        write_run(result, out, force, extra=figures, fmt=fmt)
    console = stdout()
    console.print(run_table(result.grads, title=run_title(cfg)))
    console.print(headline(result.grads, dtype=cfg.dtype), markup=False)
    console.print(comparison_line(result.summary, result.meta.get("theory", "")), markup=False)
    _print_wrote(console, out, no_plots)
    _check_figures(figures, out)


def _tables_written(out: Path) -> str:
    """'train.csv, grads.csv, params.csv, summary.csv': the tables in `out`, as the 'wrote' line names them."""
    names = [f"{t}.{ext}" for t in ("train", "grads", "params", "summary") for ext in ("csv", "parquet")]
    return ", ".join(n for n in names if (out / n).is_file())


def _print_wrote(console, out: Path, no_plots: bool) -> None:
    """The last line of run and compare: what the results dir holds."""
    figs = "" if no_plots else "".join(", " + p.name for p in sorted(out.glob("*.png")))
    console.print(f"wrote {out}/ ({_tables_written(out)}, config.yaml, meta.json{figs})", markup=False)


class _FigureWriter:
    """The `extra` hook of write_run: draw the figures into the staging dir before it is renamed. A
    figure that fails is kept aside (`error`), so the tables are still renamed into place; `check(out)`
    raises it afterwards, told of `out` (exit 3: the results are there, a figure is not)."""

    def __init__(self, result):
        self.result, self.error, self.names = result, None, []

    def __call__(self, staging: Path) -> None:
        from resflow.errors import FigureError
        from resflow.report.figures.plots import write_figures

        try:
            paths = write_figures(self.result, staging)
        except FigureError as err:
            self.error, paths = err, err.drawn
        self.names = [p.name for p in paths]

    def check(self, out: Path) -> None:
        if self.error is not None:
            raise self.error.at(out)


def _figure_writer(result, no_plots: bool = False) -> _FigureWriter | None:
    return None if no_plots else _FigureWriter(result)


def _check_figures(writer: _FigureWriter | None, out: Path) -> None:
    if writer is not None:
        writer.check(out)


class PlotFormat(str, Enum):
    png = "png"
    svg = "svg"
    pdf = "pdf"


@app.command()
@_command
def plot(
    directory: Path = typer.Argument(..., metavar="DIR", help="A results dir written by run, sweep or compare."),
    format_: PlotFormat = typer.Option(PlotFormat.png, "--format", metavar="FORMAT", help="png, or a vector format: svg, pdf."),
):
    """Redraw a results dir's figures from its CSVs alone (nothing is recomputed)."""
    from resflow.report.figures.plots import write_figures
    from resflow.results.files import read_run

    try:
        paths = write_figures(read_run(directory), directory, fmt=format_.value)
    except FigureError as err:
        if err.drawn:
            stdout().print(f"wrote {', '.join(str(p) for p in err.drawn)}", markup=False)
        raise
    stdout().print(f"wrote {', '.join(str(p) for p in paths)}", markup=False)


def _train(cfg, out: Path, force: bool, no_plots: bool, fmt: str = "csv", log_to=()) -> None:
    """`run` with train.steps > 0: a live view while training (and the trackers of --log-to), then
    the loss and per-layer tables."""
    from resflow.experiment import run as run_experiment
    from resflow.report.terminal.run import run_title
    from resflow.report.terminal.train import LiveView, loss_table, train_headline, train_table
    from resflow.results.files import write_run

    console = stdout()
    with LiveView(console, cfg.name) as view, _live_sinks(log_to, cfg, view.update) as live:
        result = run_experiment(cfg, on_step=live.on_step)
        live.finish(result)
    figures = _figure_writer(result, no_plots)
    write_run(result, out, force, extra=figures, fmt=fmt)
    console.print(loss_table(result, width=fit_width(console)))
    console.print(train_table(result, title=run_title(cfg)))
    console.print(train_headline(result), markup=False)
    _print_wrote(console, out, no_plots)
    _check_figures(figures, out)


@contextmanager
def _live_sinks(specs, cfg, then):
    """`on_step` logs each step of each seed to every tracker in `specs` (one tracker run per seed,
    `<name>/seed_<n>`: the layout `resflow export` uses), then calls `then`; `finish(result)` closes
    them with each seed's summary. Trackers left open by an error are closed without one; a TensorBoard
    log of a run that fails or is stopped is removed, and an earlier log (--force) put back."""
    from types import SimpleNamespace

    if not specs:
        yield SimpleNamespace(on_step=then, finish=lambda result: None)
        return
    import math

    from resflow.results.sinks import open_sink
    from resflow.results.tables import config_columns
    from resflow.results.tensorboard_events import METRICS

    sinks: dict[int, list] = {}

    def on_step(info):
        if info.seed not in sinks:
            hparams = {**config_columns(cfg), "seed": info.seed}
            name = f"{cfg.name}/seed_{info.seed}"
            sinks[info.seed] = [open_sink(spec, name, cfg.name, hparams, cfg.to_dict()) for spec in specs]
        scalars = {"loss": info.loss, "eval_loss": info.eval_loss, "grad_norm_total": info.grad_norm_total}
        scalars["lr"] = info.lr if info.step < info.steps else None  # train.csv has no lr after the last step
        for sink in sinks[info.seed]:
            sink.log(info.step, info.layers or (), scalars)
        then(info)

    def finish(result):
        summary = result.summary
        while sinks:
            seed, opened = sinks.popitem()
            rows = summary[summary["seed"] == seed]
            values = {m: float(rows[m].iloc[-1]) for m in METRICS if len(rows) and not math.isnan(rows[m].iloc[-1])}
            for sink in opened:
                sink.close(values)

    from contextlib import ExitStack

    from resflow._sys.undo import removed_on_failure, set_aside

    with ExitStack() as stack:
        for spec in specs:
            if spec.startswith("tensorboard:"):
                logdir = Path(spec.split(":", 1)[1])
                stack.enter_context(removed_on_failure(logdir))
                stack.enter_context(set_aside(logdir / cfg.name))
        try:
            yield SimpleNamespace(on_step=on_step, finish=finish)
        finally:
            for opened in sinks.values():
                for sink in opened:
                    sink.close()


class DemoName(str, Enum):
    all = "all"
    chain = "chain"
    tanh50 = "tanh50"


@app.command()
@_command
def demo(
    which: DemoName = typer.Argument(DemoName.all, help="chain: 0.9^50 and 0.5^99; tanh50: the seeds' scalar experiment."),
    seeds: int = typer.Option(1000, "--seeds", metavar="N", min=1, max=MAX_SEEDS, help="tanh50: number of seeds."),
    out: Path = typer.Option(Path("results") / "demo-tanh50", "--out", "-o", metavar="DIR", help="tanh50: where demo.csv goes."),
    force: bool = typer.Option(False, "--force", help="Replace an existing demo.csv."),
):
    """Reproduce the seed documents' demonstrations, and say what the evidence supports."""
    from resflow import demo as demos
    from resflow.report.terminal.demo import print_chain, print_tanh50
    from resflow.results.files import check_out_dir, write_csv

    console = stdout()
    if which in (DemoName.all, DemoName.chain):
        print_chain(console, demos.chain_demo())
    if which in (DemoName.all, DemoName.tanh50):
        check_out_dir(out, force)
        with _writing(out, force):  # two demos into one dir: the second is refused, as for run
            from resflow._sys.undo import replace_dir

            df = demos.tanh50(seeds=seeds)
            replace_dir(out, lambda staging: write_csv(df, staging / "demo.csv"))  # (nothing of an earlier run kept)
            print_tanh50(console, demos.tanh50_stats(df), demos.tanh50_conclusion(df), seeds=seeds, out=out)


class Backend(str, Enum):
    local = "local"
    ray = "ray"
    slurm = "slurm"


@app.command()
@_command
def sweep(
    config: str = typer.Argument(
        ...,
        metavar="CONFIG",
        help="A YAML path (may hold a `sweep:` section), or a bundled config name.",
        autocompletion=_complete_config,
    ),
    over: List[str] = typer.Option(
        [],
        "--over",
        metavar="KEY=V1,V2,...",
        help="An axis: KEY=V1,V2,... e.g. --over model.residual=false,true (repeatable: a grid).",
    ),
    set_: List[str] = typer.Option([], "--set", metavar="KEY=VALUE", help=SET_HELP),
    seeds: Optional[int] = typer.Option(
        None, "--seeds", min=1, max=MAX_SEEDS, metavar="N", help="Seeds per point (overrides the config's `seeds`)."
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-j", metavar="N", min=1, help="Worker processes [default: the number of cores]."
    ),
    backend: Backend = typer.Option(
        Backend.local,
        "--backend",
        metavar="BACKEND",
        help='local processes, Ray tasks (pip install "resflow[ray]") or Slurm jobs via submitit ("resflow[slurm]"; --workers N: N jobs).',
    ),
    slurm_opts: List[str] = typer.Option(
        [],
        "--slurm",
        metavar="KEY=VALUE",
        help="A Slurm job parameter, e.g. --slurm partition=gpu --slurm timeout_min=30 (repeatable).",
    ),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", metavar="ADDRESS", help="An existing Ray cluster [default: $RAY_ADDRESS, else a local one]."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", metavar="DIR", help="Results dir [default: results/<name>-sweep, plus -<key> per --over axis]."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted sweep in --out: finished points are kept."),
    force: bool = typer.Option(False, "--force", help="Replace an existing results dir."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Write no figures (profile, params, depth or ratio, heatmap .png)."),
    format_: TableFormat = _format_option(),
    tensorboard: Optional[Path] = typer.Option(
        None,
        "--tensorboard",
        metavar="LOGDIR",
        help="Also write the sweep to TensorBoard, as `export --to tensorboard` does (LOGDIR/<point>/seed_<n>).",
    ),
    allow_code: bool = _allow_code_option(),
):
    """Run a grid of configs over the --over axes (no axis at all: over depth); every point's rows in one set of CSVs, and figures."""
    from resflow._sys.locks import results_lock
    from resflow.config.memory import check_plan_memory
    from resflow.report.terminal.progress import SweepProgress
    from resflow.report.terminal.sweep import depth_story, sweep_table, sweep_title
    from resflow.report.terminal.train import loss_table
    from resflow.results.files import check_format
    from resflow.sweep.plan import load_base, make_plan
    from resflow.sweep.runner import default_out, run_sweep

    fmt = format_.value
    check_format(fmt)
    slurm_options = None
    if backend == Backend.slurm or slurm_opts:
        from resflow.executors.slurm import parse_options

        if backend != Backend.slurm:
            from resflow.errors import ConfigError

            raise ConfigError("--slurm sets a Slurm job parameter: it needs --backend slurm")
        slurm_options = parse_options(slurm_opts)
    overrides = _with_seeds(set_, seeds)
    base, yaml_axes = load_base(config, overrides)
    plan = make_plan(base, yaml_axes, over)
    out = out or default_out(plan)
    hint = _resume_command(config, over, overrides, workers, backend.value, out, fmt, slurm_opts, allow_code)
    err = stderr()
    err.print(plan.summary_line(out), markup=False)
    from resflow.executors.pool import default_workers

    check_plan_memory(plan, workers or default_workers())
    if tensorboard is not None:
        _check_logdir(tensorboard, force)
    from resflow.results.files import check_out_path

    check_out_path(out)  # (before the lock beside it is made)
    if backend == Backend.local:
        _load_torch()
    with results_lock(out, note=lambda text: err.print(text, markup=False)), SweepProgress(err) as progress:
        done = run_sweep(
            plan,
            out,
            workers=workers,
            backend=backend.value,
            ray_address=ray_address,
            resume=resume,
            force=force,
            on_start=progress.start,
            on_point=progress.advance,
            resume_hint=hint,
            fmt=fmt,
            slurm_options=slurm_options,
            on_note=lambda text: err.print(text, markup=False),
            allow_code=True if allow_code else None,
        )
    console = stdout()
    figures = None if no_plots else _figure_writer(done.result)  # (the figures read the tables back)
    if figures is not None:
        figures(out)  # (the tables are written: a figure that fails is told after them)
    figs = "".join(", " + name for name in figures.names) if figures is not None else ""
    title = sweep_title(base.name, done.summary)
    console.print(sweep_table(done.summary, plan.columns, title=title, profiles=done.profiles, width=fit_width(console)))
    for line in depth_story(done.summary, plan.columns):
        console.print(line, markup=False)
    if done.trained:
        console.print(loss_table(done.result, width=fit_width(console)))
    console.print(f"wrote {out}/ ({_tables_written(out)}, config.yaml, meta.json{figs}; points/ per point)", markup=False)
    if tensorboard is not None:
        from resflow.report.export import export as export_to

        logged = export_to(done.result, "tensorboard", tensorboard, force=force)
        console.print(
            f"wrote {len(logged.runs)} TensorBoard runs to {tensorboard}/: tensorboard --logdir {tensorboard}", markup=False
        )
    _check_figures(figures, out)


def _check_logdir(logdir: Path, force: bool) -> None:
    """--tensorboard LOGDIR before a sweep runs: the tensorboard package, and a LOGDIR that is new,
    empty, or (with --force) replaceable; the export itself refuses a LOGDIR holding other files."""
    from resflow.errors import ConfigError
    from resflow.report.export import check_target

    check_target("tensorboard")
    if logdir.exists() and not logdir.is_dir():
        raise ConfigError(f"--tensorboard {str(logdir)!r} exists and is a file, not a directory")
    if logdir.is_dir() and any(logdir.iterdir()) and not force:
        raise ConfigError(
            f"--tensorboard {str(logdir)!r} already holds files; pass --force to replace an earlier export, or name another"
        )


def _resume_command(config, over, overrides, workers, backend, out, fmt="csv", slurm_opts=(), allow_code=False) -> str:
    import shlex

    args = ["resflow", "sweep", str(config)]
    args += [a for o in over for a in ("--over", o)] + [a for o in overrides for a in ("--set", o)]
    args += (["--workers", str(workers)] if workers else []) + (["--backend", backend] if backend != "local" else [])
    args += ["--format", fmt] if fmt != "csv" else []
    args += [a for o in slurm_opts for a in ("--slurm", o)]
    args += ["--allow-code"] if allow_code else []
    return shlex.join(args + ["--out", str(out), "--resume"])


@app.command()
@_command
def compare(
    refs: List[str] = typer.Argument(
        ..., help="Two or more YAML paths or bundled config names.", autocompletion=_complete_config
    ),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP + " Applies to every config."),
    seeds: Optional[int] = typer.Option(
        None, "--seeds", min=1, max=MAX_SEEDS, metavar="N", help="Number of seeds (overrides the configs' `seeds`)."
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-j", min=1, help="Worker processes [default: the number of cores]."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results dir [default: results/compare-<a>-vs-<b>]."),
    force: bool = typer.Option(False, "--force", help="Replace an existing results dir."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Write no figures (profile.png, params.png)."),
    format_: TableFormat = _format_option(),
    allow_code: bool = _allow_code_option(),
):
    """Run configs side by side: one row per layer, one gradient column per config."""
    from resflow.report.terminal.progress import SweepProgress
    from resflow.report.terminal.sweep import compare_headlines, compare_profiles, compare_table, compare_title
    from resflow.report.terminal.train import loss_table
    from resflow.results.files import check_format, check_out_dir, write_run
    from resflow.sweep.compare import load_refs, run_compare

    check_format(format_.value)

    overrides = _with_seeds(set_, seeds)
    configs = load_refs(refs, overrides)
    out = out or Path("results") / ("compare-" + "-vs-".join(configs))
    check_out_dir(out, force)
    err = stderr()
    err.print(_compare_plan(configs, workers, out), markup=False)
    with _writing(out, force), SweepProgress(err, label="configs") as progress:
        result = run_compare(
            configs, workers=workers, on_start=progress.start, on_point=progress.advance, allow_code=True if allow_code else None
        )
        figures = _figure_writer(result, no_plots)
        write_run(result, out, force, extra=figures, fmt=format_.value)
    console = stdout()
    console.print(compare_table(result.grads, title=compare_title(list(configs), result.grads), width=fit_width(console)))
    console.print(compare_profiles(result.grads))
    for line in compare_headlines(result):
        console.print(line, markup=False)
    if result.train is not None:
        console.print(loss_table(result, width=fit_width(console)))
    _print_wrote(console, out, no_plots)
    _check_figures(figures, out)


def _compare_plan(configs, workers, out: Path) -> str:
    """The line `compare` prints before it runs: configs, seeds, training steps, workers, out."""
    seeds = sorted({c.seeds for c in configs.values()})
    steps = sorted({c.train.steps for c in configs.values()})
    train = f", training {'/'.join(map(str, steps))} steps each" if steps != [0] else ""
    on = f" on {workers} worker{'s' if workers != 1 else ''}" if workers else ""
    return (
        f"compare: {len(configs)} configs × {'/'.join(map(str, seeds))} seeds{train}{on} → {out}/ "
        "(progress below; the tables follow when all are done)"
    )


@app.command()
@_command
def show(
    directory: Path = typer.Argument(..., help="A results dir written by run, sweep or compare."),
    measure: Optional[str] = typer.Option(
        None, "--measure", "-m", metavar="NAME", help="One grads.csv quantity per layer instead (e.g. activation_rms)."
    ),
):
    """Re-print the table(s) of a results dir from its CSVs, without recomputing."""
    from resflow.report.terminal.sweep import renderables
    from resflow.results.files import read_run
    from resflow.sweep.runner import unfinished_sweep

    partial = unfinished_sweep(directory)
    if partial is not None:
        from resflow.errors import ConfigError

        raise ConfigError(
            f"{str(directory)!r} holds an unfinished sweep ({partial[0]} of {partial[1]} points); "
            f"finish it with the same `resflow sweep` command plus --resume"
        )
    console = stdout()
    result = read_run(directory)
    if measure is not None:
        from resflow.report.terminal.run import measure_table

        check_measure(measure, result.grads)
        console.print(measure_table(result.grads, measure))
        return
    for item in renderables(result, width=fit_width(console)):
        console.print(item, markup=False) if isinstance(item, str) else console.print(item)


def check_measure(name: str, grads) -> None:
    """A one-line ConfigError unless `name` is a grads.csv quantity of the registry that `grads` holds."""
    from resflow import quantities
    from resflow.errors import ConfigError

    if name not in quantities.GRADS:
        raise ConfigError(f"--measure: unknown quantity {name!r}; one of {', '.join(quantities.GRADS)}")
    if name not in grads.columns:
        held = [n for n in quantities.GRADS if n in grads.columns]
        raise ConfigError(f"--measure: this results dir has no {name!r} column (measured: {', '.join(held)})")


@app.command()
@_command
def report(
    directory: Path = typer.Argument(..., metavar="DIR", help="A results dir written by run, sweep or compare (CSV or Parquet)."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", metavar="FILE", help="Where the page goes [default: DIR/report.html]."
    ),
    redact: bool = typer.Option(
        False, "--redact", help="Leave out absolute paths, the command line and host details (to share the page)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file that resflow did not write."),
):
    """Write one self-contained report.html (figures, tables, headline, config, provenance) to share or open offline."""
    from resflow.report.html import write_report
    from resflow.sweep.runner import unfinished_sweep

    partial = unfinished_sweep(directory)
    if partial is not None:
        from resflow.errors import ConfigError

        raise ConfigError(
            f"{str(directory)!r} holds an unfinished sweep ({partial[0]} of {partial[1]} points); "
            f"finish it with the same `resflow sweep` command plus --resume"
        )
    path = write_report(directory, out, redact=redact, force=force)
    stdout().print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained: open it in any browser)", markup=False)


class Tracker(str, Enum):
    tensorboard = "tensorboard"
    wandb = "wandb"
    mlflow = "mlflow"


@app.command()
@_command
def export(
    directory: Path = typer.Argument(..., metavar="DIR", help="A results dir written by run, sweep or compare (CSV or Parquet)."),
    dest: Optional[str] = typer.Argument(
        None,
        metavar="[DEST]",
        help="tensorboard: the LOGDIR [default: runs/<DIR's name>]; wandb: the PROJECT [default: DIR's name]; "
        "mlflow: the TRACKING_URI [default: MLflow's own; experiment: DIR's name].",
    ),
    to: Tracker = typer.Option(
        ...,
        "--to",
        metavar="TRACKER",
        help='tensorboard, wandb or mlflow (pip install "resflow[tensorboard]", "resflow[wandb]", "resflow[mlflow]").',
    ),
    force: bool = typer.Option(False, "--force", help="tensorboard: replace an earlier export in LOGDIR."),
):
    """Export a results dir to a tracker: per-layer gradient norms over steps, the depth profile, losses, the config."""
    from resflow._sys.undo import removed_on_failure
    from resflow.errors import environment_error
    from resflow.report.export import check_target, default_dest
    from resflow.report.export import export as export_to
    from resflow.results.files import read_run

    check_target(to.value)
    result = read_run(directory)
    name = Path(directory).resolve().name
    if to == Tracker.tensorboard:
        logdir = Path(dest) if dest else default_dest(directory)
        try:
            with removed_on_failure(logdir):  # stopped or failed: no partial event files left
                done = export_to(result, to.value, logdir, force=force)
        except OSError as err:  # a full disk: named by where the export was going
            fault = environment_error(err, path=logdir, doing="cannot write the export to")
            if fault is None:
                raise
            raise fault from None
        stdout().print(
            f"wrote {len(done.runs)} runs ({done.scalars:,} scalars, {done.histograms:,} histograms) to {logdir}/; "
            f"view them with: tensorboard --logdir {logdir}",
            markup=False,
        )
        return
    done = export_to(result, to.value, dest, name=name)
    where = f"W&B project {done.dest!r}" if to == Tracker.wandb else f"MLflow experiment {name!r} at {done.dest}"
    stdout().print(f"wrote {len(done.runs)} runs ({done.scalars:,} scalars) to {where}", markup=False)


@app.command()
@_command
def theory(
    config: str = typer.Argument(
        ..., metavar="CONFIG", help="A YAML path, or the name of a bundled config.", autocompletion=_complete_config
    ),
    set_: List[str] = typer.Option([], "--set", metavar="KEY=VALUE", help=SET_HELP),
    critical: bool = typer.Option(
        False, "--critical", help="Print only the model.init.scale at the edge of chaos for the config's init scheme."
    ),
):
    """Print the predicted gradient flow of a config (no network is run; instant)."""
    from resflow.config.loading import load_config
    from resflow.theory.text import describe

    cfg = load_config(config, list(set_))
    if critical:
        from resflow.errors import ConfigError
        from resflow.theory.predict import critical_scale

        scale, text = critical_scale(cfg.model)
        if scale is None:
            raise ConfigError(f"{cfg.name}: {text}")
        typer.echo(text)
        return
    for line in describe(cfg):
        typer.echo(line)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
