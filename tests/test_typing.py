"""mypy --strict sees resflow's real signatures (the package ships py.typed): a user's script that
calls resflow.run/record/watch checks clean, and a wrong call is an error, not `Any` waved through."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    shutil.which("mypy") is None and not (Path(sys.executable).parent / "mypy").exists(), reason="mypy not installed"
)


def test_mypy_strict_sees_the_real_signatures(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import resflow\n"
        "reveal_type(resflow.run)\n"
        "reveal_type(resflow.watch)\n"
        "reveal_type(resflow.record)\n"
        'resflow.run("deep50")  # a name, not a Config: an error\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), "examples/typed_api.py", str(probe)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stdout.splitlines()
    assert not [line for line in lines if "typed_api.py" in line], done.stdout  # the user's script: clean
    revealed = [line for line in lines if "Revealed type" in line]
    assert len(revealed) == 3 and not any('"Any"' in line for line in revealed), done.stdout
    assert "-> resflow.results.tables.RunResult" in revealed[0] and "-> resflow.anymodel.Watch" in revealed[1]
    assert any('Argument 1 to "run" has incompatible type "str"; expected "Config"' in line for line in lines), done.stdout
    assert done.returncode == 1  # that one error
