"""`resflow report DIR`: one self-contained report.html. Its structure is checked here always; in a
real headless Chromium (tests skip without /usr/bin/chromium; .ci/run installs it) the page loads
with no error and every figure decoded, and a screenshot is not blank."""

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from clirunner import Runner

from resflow.cli.app import app

pytestmark = pytest.mark.smoke
runner = Runner()
SMALL = ["--set", "model.width=8", "--set", "data.batch_size=4", "--seeds", 2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.refs, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        for key in ("src", "href"):
            if key in attrs and tag != "img":
                self.refs.append(attrs[key])

    def handle_data(self, data):
        self.text.append(data)


def parse(path):
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "sweep"
    result = invoke(
        "sweep",
        "deep50",
        "--over",
        "model.residual=false,true",
        "--over",
        "model.depth=1,2,4",
        "--workers",
        1,
        "--out",
        out,
        *SMALL,
    )
    assert result.exit_code == 0, result.output
    result = invoke("report", out)
    assert result.exit_code == 0, result.output
    return out


def test_report_holds_figures_tables_headline_config_provenance(sweep_report):
    page = parse(sweep_report / "report.html")
    pngs = sorted(p.stem for p in sweep_report.glob("*.png"))  # what `resflow sweep` drew
    assert len(page.imgs) == len(pngs) + 1 and len(pngs) >= 3  # + the registry's quantities figure (the page only)
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.refs == [] and "<script" not in (sweep_report / "report.html").read_text()  # nothing fetched or run
    text = " ".join(" ".join(page.text).split())
    shown = invoke("show", sweep_report).stdout
    story = [line for line in shown.splitlines() if line.startswith("residual=")]  # the headline sentences show prints
    assert story and all(" ".join(line.split()) in text for line in story)
    assert page.tags.count("table") >= 2  # show's table and the provenance
    assert "model.residual" in text or "residual:" in text  # the config (its sweep: section)
    assert "command" in text and "resflow" in text  # provenance from meta.json


def test_report_of_a_training_run_and_errors(tmp_path):
    out = tmp_path / "t"
    assert invoke("run", "deep50", "--out", out, "--set", "model.depth=3", "--set", "train.steps=3", *SMALL).exit_code == 0
    assert invoke("report", out, "--out", tmp_path / "share.html").exit_code == 0
    page = parse(tmp_path / "share.html")
    assert "loss figure" in [a for a in re.findall(r"alt='([^']*)'", (tmp_path / "share.html").read_text())]
    assert page.tags.count("table") >= 3  # per-layer, loss, provenance
    missing = invoke("report", tmp_path / "nope")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


CHECKER = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.src) || e)), true);
const _err = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); _err(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const out = document.createElement('div'); out.id = 'check';
  out.textContent = `figures ${ok}/${imgs.length}; errors ${window.__errors.length}: ${window.__errors.join(' | ')}`;
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (.ci/run installs Debian's chromium)")
def test_report_in_headless_chromium(sweep_report, tmp_path):
    # load: a copy with a checker script first in <head> (the report itself has none)
    html = (sweep_report / "report.html").read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("<head>", "<head>" + CHECKER, 1), encoding="utf-8")
    flags = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    check = re.search(r"<div id=\"check\">([^<]*)</div>", dom)
    assert check, dom[-500:]
    n = html.count("<img ")
    assert check.group(1).startswith(f"figures {n}/{n}; errors 0"), check.group(1)
    # screenshot of the report itself: not blank (many distinct colours, a fair share of non-white pixels)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, "--window-size=1200,1600", f"--screenshot={shot}", (sweep_report / "report.html").as_uri()],
        capture_output=True,
        timeout=120,
    )
    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (1600, 1200, 3)
    non_white = float((image.astype(int).sum(axis=2) < 720).mean())
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    assert non_white > 0.03 and colours > 50, (non_white, colours)


def test_redact_leaves_out_paths_command_and_host(sweep_report, tmp_path):
    """--redact: no absolute path, no command line, no platform string or host name on the page; the
    default page holds them and says so, and says how to leave them out."""
    import json
    import platform

    meta = json.loads((sweep_report / "meta.json").read_text())
    secrets = [str(sweep_report.resolve()), str(sweep_report.parent), meta["command"], meta["platform"], platform.platform()]
    secrets = [s for s in secrets if len(s) > 8]  # (under pytest-xdist the command is just "-c")
    default = (sweep_report / "report.html").read_text(encoding="utf-8")
    assert meta["platform"] in default and "<th>command</th>" in default
    assert "the command line as typed" in default and "--redact" in default
    out = tmp_path / "shared.html"
    assert invoke("report", sweep_report.resolve(), "--out", out, "--redact").exit_code == 0
    page = out.read_text(encoding="utf-8")
    for secret in secrets:
        assert secret not in page, secret
    assert "<th>command</th>" not in page and "<th>platform</th>" not in page
    assert "Redacted for sharing" in page and "sweep" in page  # the dir's own name stays
    assert parse(out).imgs == parse(sweep_report / "report.html").imgs  # the same figures
