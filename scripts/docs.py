"""Every real-output block and figure in README.md and docs/*.md, regenerated from its command.

    python -m scripts.docs                 # re-run the fast blocks' commands, rewrite those blocks and figures
    python -m scripts.docs --slow          # ... and the slow ones (the degradation experiment, long sweeps)
    python -m scripts.docs --check         # exit 1, listing the fast blocks whose text differs (CI)
    python -m scripts.docs --only docs/theory.md --slow

A block is marked in the markdown with HTML comments (invisible when rendered):

    <!-- docs-output: resflow theory deep50 -->
    ```text
    $ resflow theory deep50
    ... the command's stdout ...
    ```
    <!-- /docs-output -->

`docs-output-slow: CMD || SMALL` marks a slow block: not run by `--check`; rewritten with `--slow`,
with a "regenerate with ..." line; tests/test_docs_output.py runs CMD with the SMALL arguments added
to check that it still runs. A figure (`docs-figure-slow`: with `--slow` only): `<!-- docs-figure: CMD => FILE -->` on the line above a
markdown image; the script runs CMD and copies FILE (relative to the run's directory) to the image's
path. Figures are rewritten, never byte-compared (PNG bytes differ across matplotlib versions).

Each command runs in a fresh temporary directory (so `results/<name>/` paths are the same on every
machine), with this checkout first on PYTHONPATH, one torch thread (OMP_NUM_THREADS=1: results do
not depend on the machine's core count), no COLUMNS (tables at their natural width), stdout only.
`resflow ...` runs this checkout's resflow as its console script would, `torchrun ...` as
`python -m torch.distributed.run ...`, `python x.py` this interpreter on the checkout's x.py, and a
word naming a file of the checkout's examples/, benchmarks/ or scripts/ is that file. Each command
runs in its own process group, stopped whole when the command ends (nothing it started is left
running) or times out. The output is normalised: the temporary directory and the checkout's path
become `.`.

A command is a line of bash: `VAR=value resflow ...`, `resflow ... | tail -3` and `2>&1` (to show an
error message, which goes to stderr) work as typed. Several commands joined by ` && ` run one after
the other in the same directory (a run, then a command reading its results dir); the block shows
each as `$ command` followed by its output. A command fails the script when it exits non-zero,
unless it shows its stderr (`2>&1`): then its message is the output. A slow block's SMALL arguments
are added to each command that starts with the first one's two words (`resflow run`), before a
pipe or redirection.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/*.md"]
OPEN = re.compile(r"^<!-- docs-output(?P<slow>-slow)?: (?P<cmd>.+?)(?: \|\| (?P<small>.+?))? -->$")
CLOSE = "<!-- /docs-output -->"
FIGURE = re.compile(r"^<!-- docs-figure(?P<slow>-slow)?: (?P<cmd>.+?) => (?P<file>\S+) -->$")
IMAGE = re.compile(r"!\[[^\]]*\]\((?P<path>[^)\s]+)\)")
TIMEOUT = 3600  # seconds per command (the slow ones)


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening marker
    cmd: str
    slow: bool
    small: str  # extra arguments that make a slow command quick (tests)
    start: int  # index of the first line inside the block
    end: int  # index of the closing marker

    def where(self) -> str:
        return f"{rel(self.page)}:{self.line}: {self.cmd}"


@dataclass
class Figure:
    page: Path
    line: int
    cmd: str
    file: str
    target: Path
    slow: bool


def rel(path: Path) -> str:
    """`path` relative to the checkout when inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def pages(only: list[str] | None = None) -> list[Path]:
    if only:
        return [(ROOT / p).resolve() for p in only]
    return sorted({p for pattern in PAGES for p in ROOT.glob(pattern)})


def parse(page: Path) -> tuple[list[Block], list[Figure]]:
    """The marked blocks and figures of one page; a block left open is an error."""
    lines = page.read_text().splitlines()
    blocks, figures = [], []
    i = 0
    while i < len(lines):
        m = OPEN.match(lines[i].strip())
        f = FIGURE.match(lines[i].strip())
        if m:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == CLOSE), None)
            if end is None:
                sys.exit(f"{page}:{i + 1}: '{lines[i].strip()}' has no closing '{CLOSE}'")
            blocks.append(Block(page, i + 1, m["cmd"], bool(m["slow"]), m["small"] or "", i + 1, end))
            i = end
        elif f:
            image = IMAGE.search(lines[i + 1]) if i + 1 < len(lines) else None
            if image is None:
                sys.exit(f"{page}:{i + 1}: a docs-figure marker must be followed by a markdown image line")
            figures.append(Figure(page, i + 1, f["cmd"], f["file"], (page.parent / image["path"]).resolve(), bool(f["slow"])))
        i += 1
    return blocks, figures


def argv(cmd: str, extra: str = "") -> list[str]:
    """The command line to run: `resflow ...` as `python -m resflow ...`, `python x.py` on the checkout's x.py."""
    words = shlex.split(cmd) + shlex.split(extra)
    if words[0] == "resflow":
        return [sys.executable, "-m", "resflow", *words[1:]]
    if words[0] == "python":
        rest = words[1:]
        if rest and not rest[0].startswith("-") and (ROOT / rest[0]).exists():
            rest[0] = str(ROOT / rest[0])
        return [sys.executable, *rest]
    sys.exit(f"docs: cannot run {cmd!r}: a marked command starts with 'resflow' or 'python'")


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    return env


SEP = " && "


def commands(cmd: str, extra: str = "") -> list[str]:
    """The commands of a block, in order. SMALL arguments (`extra`) go to every command that starts
    with the first one's two words (`resflow run`), before its pipe or redirection (`| tail -2`)."""
    parts = cmd.split(SEP)
    if extra:
        program = parts[0].split()[:2]
        for i, part in enumerate(parts):
            if part.split()[:2] == program:
                cut = min([k for k in (part.find(" |"), part.find(" >"), part.find(" 2>")) if k >= 0], default=len(part))
                parts[i] = f"{part[:cut]} {extra}{part[cut:]}"
    return parts


def shim(bindir: Path) -> Path:
    """`resflow`, `python` and `torchrun` on PATH as this interpreter, so a block's bash line runs
    this checkout."""
    bindir.mkdir(parents=True, exist_ok=True)
    scripts = {
        # as pip's console script for `resflow = "resflow.cli:main"`: the program is named `resflow`
        "resflow": f"#!{sys.executable}\nimport sys\nfrom resflow.cli import main\nsys.exit(main())\n",
        "python": f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n',
        "torchrun": f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m torch.distributed.run "$@"\n',
    }
    for name, text in scripts.items():
        exe = bindir / name
        exe.write_text(text)
        exe.chmod(0o755)
    return bindir


CHECKOUT_PATH = re.compile(r"(?<![^\s])(?:examples|benchmarks|scripts)/[\w./-]+(?![^\s])")


def bash_line(part: str) -> str:
    """`python x.py ...` on the checkout's x.py (the command runs elsewhere), and any word that is a
    file of the checkout's examples/, benchmarks/ or scripts/ (`torchrun ... examples/ddp_watch.py`,
    `resflow run examples/bad/typo.yaml`) as that file's path; anything else as typed."""
    m = re.match(r"^python (\S+)", part)
    if m and not m[1].startswith("-") and (ROOT / m[1]).is_file():
        part = f"python {shlex.quote(str(ROOT / m[1]))}{part[m.end() :]}"
    return CHECKOUT_PATH.sub(lambda w: shlex.quote(str(ROOT / w[0])) if (ROOT / w[0]).is_file() else w[0], part)


def run_bash(line: str, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`bash -c line` in its own process group, which is killed whole when the command times out or
    leaves a process running behind it (`torchrun`'s workers, a server): nothing outlives a block.
    Its output goes to files, not pipes, so a process left holding them does not keep us waiting."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as stdout, tempfile.TemporaryFile("w+", encoding="utf-8") as stderr:
        proc = subprocess.Popen(["bash", "-c", line], cwd=cwd, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            sys.exit(f"docs: {line!r} did not finish within {timeout:g} s (stopped, with every process it started)")
        finally:
            left = _kill_group(proc.pid)
        if left:
            print(f"docs: {line!r} left processes running: stopped", file=sys.stderr, flush=True)
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout.read(), stderr.read())


def _kill_group(pgid: int) -> bool:
    """SIGKILL every process left in the group; whether there was any."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def transcript(cmd: str, cwd: Path, extra: str = "", timeout: float = TIMEOUT) -> str:
    """What a terminal shows for the block: each command after the first as `$ command`, then its
    stdout (normalised); exits with the stderr of a command that fails, or that runs longer than
    `timeout` seconds."""
    env = environment()
    env["PATH"] = str(shim(cwd / ".docs-bin")) + os.pathsep + env.get("PATH", "")
    out = []
    for i, part in enumerate(commands(cmd, extra)):
        done = run_bash(bash_line(part), cwd, env, timeout)
        if done.returncode != 0 and "2>&1" not in part:
            sys.exit(f"docs: {part!r} failed ({done.returncode}):\n{done.stderr.strip()}")
        shown = normalise(done.stdout, cwd) if done.stdout.strip() else ""
        out.append(("" if i == 0 else f"$ {part}\n") + shown)
    return "".join(out)


def normalise(text: str, cwd: Path) -> str:
    """Paths that depend on where it ran become `.`; trailing spaces (a table's padding) go."""
    for path in sorted({str(cwd), str(cwd.resolve()), str(ROOT)}, key=len, reverse=True):
        text = text.replace(path + "/", "").replace(path, ".")
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def render(block: Block, output: str) -> list[str]:
    """The lines inside a block: the command and its output in a text fence (and, for a slow block,
    how to regenerate it)."""
    lines = ["```text", f"$ {commands(block.cmd)[0]}", *output.rstrip("\n").splitlines(), "```"]
    if block.slow:
        page = rel(block.page)
        lines.append(f"*Slow (not checked in CI); regenerate with `python -m scripts.docs --slow --only {page}`.*")
    return lines


class Runner:
    """Runs each distinct command once, in its own temporary directory (figures reuse the run)."""

    def __init__(self, keep: Path):
        self.keep, self.done = keep, {}

    def __call__(self, cmd: str) -> tuple[str, Path]:
        if cmd not in self.done:
            cwd = Path(tempfile.mkdtemp(dir=self.keep))
            print(f"docs: running {cmd}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            self.done[cmd] = (transcript(cmd, cwd), cwd)
            print(f"docs: {time.perf_counter() - start:.1f} s for {cmd}", file=sys.stderr, flush=True)
        return self.done[cmd]


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 listing the fast blocks that differ")
    parser.add_argument("--slow", action="store_true", help="also the slow blocks (never with --check)")
    parser.add_argument("--only", action="append", default=[], metavar="PAGE", help="just this page (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the marked blocks and figures, run nothing")
    opts = parser.parse_args(args)
    parsed = {page: parse(page) for page in pages(opts.only)}
    if opts.list:
        for page, (blocks, figures) in parsed.items():
            for b in blocks:
                print(("slow  " if b.slow else "fast  ") + b.where())
            for f in figures:
                print(f"figure {rel(f.page)}:{f.line}: {f.cmd} => {rel(f.target)}")
        return 0
    differ = []
    with tempfile.TemporaryDirectory(prefix="resflow-docs-") as tmp:
        runner = Runner(Path(tmp))
        for page, (blocks, figures) in parsed.items():
            lines = page.read_text().splitlines()
            changed = False
            for b in reversed(blocks):  # from the bottom: earlier line numbers stay valid
                if b.slow and (opts.check or not opts.slow):
                    continue
                new = render(b, runner(b.cmd)[0])
                if lines[b.start : b.end] != new:
                    differ.append(b.where())
                    lines[b.start : b.end] = new
                    changed = True
            if not opts.check:
                for f in figures:
                    if f.slow and not opts.slow:
                        continue
                    _, cwd = runner(f.cmd)
                    source = cwd / f.file
                    if not source.is_file():
                        sys.exit(f"docs: {f.cmd!r} wrote no {f.file}")
                    f.target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, f.target)
                if changed:
                    page.write_text("\n".join(lines) + "\n")
    if opts.check:
        if differ:
            print("docs: these blocks differ from what their commands print now (python -m scripts.docs rewrites them):")
            for where in reversed(differ):
                print(f"  {where}")
            return 1
        print("docs: every fast block is what its command prints")
        return 0
    for where in reversed(differ):
        print(f"rewrote {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
