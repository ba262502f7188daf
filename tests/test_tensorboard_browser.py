"""A real `tensorboard` server on an export, looked at the way a user does: its custom-scalars API
overlays every layer of a quantity in one chart, and headless Chromium renders that chart (a
screenshot with the runs' lines in it). The server listens on 127.0.0.1 only, is bounded in time
and killed after; the test skips where tensorboard or chromium is missing (.ci/run installs both)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from clirunner import Runner

from resflow.cli.app import app

pytest.importorskip("tensorboard")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TENSORBOARD = Path(sys.executable).parent / "tensorboard"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


@pytest.fixture
def server(tmp_path):
    out, logdir = tmp_path / "r", tmp_path / "tb"
    args = ["run", "deep50", "--set", "model.depth=3", "--set", "model.width=8", "--set", "train.steps=4"]
    assert Runner().invoke(app, [*args, "--seeds", "2", "--no-plots", "--out", str(out)]).exit_code == 0
    assert Runner().invoke(app, ["export", str(out), str(logdir), "--to", "tensorboard"]).exit_code == 0
    if not TENSORBOARD.exists():
        pytest.skip("no tensorboard executable")
    port = free_port()
    proc = subprocess.Popen(
        [str(TENSORBOARD), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if b"custom_scalars" in get(f"{base}/data/plugins_listing"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("tensorboard did not come up within 60 s")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_custom_scalars_overlay_every_layer(server, tmp_path):
    layout = json.loads(get(f"{server}/data/plugin/custom_scalars/layout"))
    charts = {c["title"]: c["multiline"]["tag"] for cat in layout["category"] for c in cat["chart"]}
    assert charts["input_grad_norm"] == ["^input_grad_norm/layer_"]
    query = urllib.request.quote("^input_grad_norm/layer_")
    data = json.loads(get(f"{server}/data/plugin/custom_scalars/scalars?run=deep50/seed_0&tag={query}"))
    assert data["regex_valid"] and sorted(data["tag_to_events"]) == [f"input_grad_norm/layer_{i:03d}" for i in range(3)]

    if CHROMIUM is None:
        pytest.skip("no chromium here (.ci/run installs Debian's chromium)")
    shot = tmp_path / "custom_scalars.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1000",
         "--virtual-time-budget=15000", f"--screenshot={shot}", f"{server}/#custom_scalars"],
        capture_output=True,
        timeout=120,
        check=True,
    )  # fmt: skip
    from matplotlib.image import imread

    image = imread(shot)[..., :3]  # (H, W, 3) floats in [0, 1]
    assert image.shape[:2] == (1000, 1400)
    charts_area = image[120:700, 360:]  # right of the run selector, below the tab bar
    r, g, b = charts_area[..., 0], charts_area[..., 1], charts_area[..., 2]
    blue = (b > 0.55) & (r < 0.25) & (g > 0.3) & (g < 0.6)  # seed_1's lines (TensorBoard's second run colour)
    orange = (r > 0.9) & (g > 0.35) & (g < 0.55) & (b < 0.35)  # seed_0's
    assert blue.sum() > 200 and orange.sum() > 200, (blue.sum(), orange.sum())
    assert len(np.unique((charts_area * 255).astype(int).reshape(-1, 3), axis=0)) > 50  # a drawn chart, not a blank page
