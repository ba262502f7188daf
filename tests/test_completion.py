"""Shell completion of config names: `resflow run de<TAB>` offers the bundled configs (and YAML files
here) for run, sweep, compare and theory, through Typer's own completion protocol (bash and zsh)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from resflow.cli.app import app

CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def complete(words: str, shell: str = "bash") -> list[str]:
    env = {"_RESFLOW_COMPLETE": f"complete_{shell}", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    if shell == "zsh":
        env = {"_RESFLOW_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": words}
    done = CliRunner().invoke(app, [], prog_name="resflow", env=env)
    assert done.exit_code == 0, done.output
    return done.output.split()


@pytest.mark.parametrize(
    "words", ["resflow run de", "resflow sweep de", "resflow compare deep50 de", "resflow theory de"], ids=lambda w: w.split()[1]
)
def test_config_names_complete(words):
    want = [n for n in CONFIGS if n.startswith("de")]
    assert len(want) >= 2 and complete(words) == want


def test_a_prefix_of_one_name_and_yaml_files_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("name: mine\n")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "sub").mkdir()
    assert complete("resflow run microg") == [n for n in CONFIGS if n.startswith("microg")]
    assert complete("resflow run m") == [n for n in CONFIGS if n.startswith("m")] + ["mine.yaml"]
    assert complete("resflow run s") == [n for n in CONFIGS if n.startswith("s")] + ["sub/"]
    assert "deep50" in " ".join(complete("resflow run de", shell="zsh"))
