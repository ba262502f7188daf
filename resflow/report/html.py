"""`resflow report DIR`: one self-contained report.html to share a results dir.

Everything inline (figures as base64 PNG, CSS in the page, no script, no font or file fetched), so
the page opens offline in any browser and travels as one file. It holds what `resflow show` prints
(its tables as HTML tables, its headline sentences), every figure `resflow plot` draws, the config
and the provenance (meta.json: versions, command, times). Nothing is recomputed from a model.
"""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import yaml

from resflow._version import __version__

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #1a1a1a; background: #fff; line-height: 1.45; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.sub { color: #555; margin-top: 0; }
.headline { background: #f4f7fb; border-left: 4px solid #3b6fb6; padding: .5em .8em; margin: .6em 0; }
table { border-collapse: collapse; margin: .8em 0; font-size: .88em; }
th, td { border: 1px solid #ddd; padding: .25em .55em; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
.tablenote { color: #555; font-size: .85em; }
.mono, td { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
.scroll { overflow-x: auto; }
"""

FIGURE_DPI = 110
GENERATOR = "<meta name='generator' content='resflow report'>"  # marks a page resflow wrote: --out may replace it


def written_by_report(path: Path) -> bool:
    """Is the regular file `path` a page `resflow report` wrote (its generator mark in its head)?"""
    try:
        with open(path, "rb") as fh:
            return GENERATOR.encode() in fh.read(512)
    except OSError:
        return False


FIGURE_NOTES = {
    "profile": "Gradient norm reaching each layer (median over seeds; band: min-max).",
    "params": "Parameter gradient norms per layer.",
    "depth": "First/last-layer gradient ratio against depth.",
    "ratio": "First/last-layer gradient ratio against the one swept key.",
    "heatmap": "The ratio over the two swept keys.",
    "loss": "Training loss over steps.",
    "steps": "Per-layer gradient norms over training steps.",
    "quantities": "The other measured quantities per layer (resflow.quantities).",
}


def _plain(cell) -> str:
    return cell.plain if hasattr(cell, "plain") else str(cell)


def rich_table_html(table) -> str:
    """A Rich Table (as `resflow show` prints it) as an HTML table: same title, headers, cells, caption."""
    headers = "".join(f"<th>{escape(_plain(c.header))}</th>" for c in table.columns)
    columns = [list(c.cells) for c in table.columns]
    rows = "".join("<tr>" + "".join(f"<td>{escape(_plain(cell))}</td>" for cell in row) + "</tr>" for row in zip(*columns))
    title = f"<caption>{escape(_plain(table.title))}</caption>" if table.title else ""
    note = f"<p class='tablenote'>{escape(_plain(table.caption))}</p>" if table.caption else ""
    return f"<div class='scroll'><table>{title}<thead><tr>{headers}</tr></thead><tbody>{rows}</tbody></table></div>{note}"


def figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


REDACTED_KEYS = {"command", "platform", "host", "hostname", "node", "user", "cwd"}  # left out by --redact, at any depth
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])(?:[A-Za-z]:\\|/)[^\s'\",;]+")


def _redact(value):
    """meta/config values with REDACTED_KEYS left out and every absolute path cut to its last part."""
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items() if str(k).lower() not in REDACTED_KEYS}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(lambda m: "…/" + re.split(r"[\\/]", m.group(0).rstrip("\\/"))[-1], value)
    return value


def _contents_note(redact: bool) -> str:
    """What the page holds, said on the page, so a user knows what they share."""
    if redact:
        text = (
            "Redacted for sharing (resflow report --redact): absolute paths are cut to their last part; the command "
            "line, the platform string and host names are left out. It holds the results' figures, tables, config and "
            "versions."
        )
    else:
        text = (
            "This page holds the results' figures, tables and config, and their provenance: the resflow, torch and "
            "Python versions, the platform string, the command line as typed and the results dir's path. "
            "To share it without the paths, command line and host details: resflow report DIR --redact."
        )
    return f"<p class='sub'>{escape(text)}</p>"


def _provenance(result, source: Path, redact: bool = False) -> str:
    meta = _redact(dict(result.meta or {})) if redact else dict(result.meta or {})
    rows = [
        ("results dir", Path(source).resolve().name if redact else str(source)),
        ("report written", datetime.now(timezone.utc).isoformat(timespec="seconds")),
        ("report by", f"resflow {__version__}"),
    ]
    for key, value in meta.items():
        if key == "theory":
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        rows.append((key, text if len(text) < 400 else text[:400] + "…"))
    body = "".join(
        f"<tr><th>{escape(k)}</th><td style='text-align:left;white-space:normal'>{escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


def render(result, source: Path, failed: list | None = None, redact: bool = False) -> str:
    """The report page of a RunResult read from `source` (read_run). A figure that cannot be drawn
    is left out, with a line saying so in its place, and added to `failed` as (name, error);
    `redact`: without absolute paths, the command line or host details (see _contents_note)."""
    from rich.table import Table

    from resflow.report.figures.plots import describe, drawn_quantities, figure_builders, quantities_figure
    from resflow.report.terminal.sweep import renderables

    failed = [] if failed is None else failed

    title, caption = describe(result)
    parts = [f"<h1>{escape(title)}</h1>", f"<p class='sub'>{escape(caption)}</p>", _contents_note(redact)]
    items = renderables(result, width=140)
    sentences = [i for i in items if isinstance(i, str) and i.strip()]
    tables = [i for i in items if isinstance(i, Table)]
    if sentences:
        parts.append("<h2>Headline</h2>")
        parts += [f"<p class='headline'>{escape(s)}</p>" for s in sentences]
    builders = figure_builders(result)
    if drawn_quantities(result.grads):  # the registry's other per-layer quantities (the page only)
        builders["quantities"] = lambda: quantities_figure(result.grads, title=describe(result)[0])
    if builders:
        parts.append("<h2>Figures</h2>")
        for name, build in builders.items():
            note = FIGURE_NOTES.get(name, "")
            try:
                png = figure_png(build())
            except Exception as err:  # noqa: BLE001 - a figure's bug costs that figure, not the page
                failed.append((f"{name}.png", err))
                parts.append(f"<p class='figure-error'>{escape(name)}.png could not be drawn ({escape(type(err).__name__)}).</p>")
                continue
            parts.append(
                f"<figure id='fig-{escape(name)}'><img alt='{escape(name)} figure' src='data:image/png;base64,"
                f"{png}'><figcaption>{escape(name)}.png — {escape(note)}</figcaption></figure>"
            )
    if tables:
        parts.append("<h2>Tables</h2>")
        parts += [rich_table_html(t) for t in tables]
    parts.append("<h2>Config</h2>")
    config = _redact(result.config or {}) if redact else (result.config or {})
    parts.append(f"<pre>{escape(yaml.safe_dump(config, sort_keys=False))}</pre>")
    parts.append("<h2>Provenance</h2>")
    parts.append(_provenance(result, source, redact))
    body = "\n".join(parts)
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>{GENERATOR}"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def write_report(directory: Path, out: Path | None = None, redact: bool = False, force: bool = False) -> Path:
    """Read results dir `directory` and write its report (default: DIR/report.html), atomically.
    `out` may replace only a regular file: an earlier report, DIR's own report.html, or with `force`
    a file the user names (resflow.results.files.check_out_file). A figure that cannot be drawn: the
    page is written without it, then a FigureError (exit 3)."""
    from resflow._sys.files import write_text_atomic
    from resflow.results.files import check_out_file, read_run

    directory = Path(directory)
    result = read_run(directory)  # (first: a DIR that is not a results dir is named as such)
    out = Path(out) if out is not None else directory / "report.html"
    check_out_file(out, force, own_name="report.html", ours=written_by_report)
    failed: list = []
    write_text_atomic(out, render(result, directory, failed, redact))
    if failed:  # the page is written, its tables whole: the exit code says what is missing
        from resflow.errors import FigureError

        raise FigureError(failed, directory, written=f"{out} is written without them, its tables complete")
    return out
