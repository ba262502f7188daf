"""The sweep's parent process (issue 29): its big writes in pieces, the tables' CSV text made while
the workers run, the pool's results collected in linear time, the terminal table drawn fast. Every
output is held to the bytes of the straightforward way of making it."""

import os

import numpy as np
import pandas as pd

import resflow.results.files as files
from resflow.results.csvtext import to_csv_text


def test_write_csv_in_pieces_writes_every_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "WRITE_PIECE", 1000)  # many pieces, cut mid-line
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=500), "w": ["a,b"] * 250 + ["é"] * 250, "k": np.arange(500)})
    files.write_csv(df, tmp_path / "t.csv")
    data = (tmp_path / "t.csv").read_bytes()
    assert len(data) > 10 * files.WRITE_PIECE
    assert data == df.to_csv(index=False).encode()
    fd = os.open(tmp_path / "p.bin", os.O_WRONLY | os.O_CREAT)
    blob = rng.bytes(12_345)
    files.write_pieces(fd, blob)
    os.close(fd)
    assert (tmp_path / "p.bin").read_bytes() == blob
    assert to_csv_text(df) == df.to_csv(index=False)
