"""Hash the CSVs that every bundled config, a sweep and a compare produce: a behaviour fingerprint.

    python scripts/snapshot.py OUT_DIR > manifest.txt

Run it before and after a refactor and diff the manifests: identical lines mean byte-identical
CSVs. Training configs run a few steps only (the point is the code path, not the curve).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path.cwd()  # the checkout to fingerprint: run from its top
SHORT = ["--set", "train.steps=3"]  # training configs: a few steps, every code path
WARMUP = ["--set", "train.warmup=2"]  # (warmup must fit in those steps)


def fingerprint(csv: Path) -> str:
    """sha256 of the file's bytes, less the one column that measures time (train.csv's wall_time_s)."""
    lines = csv.read_bytes().split(b"\n")
    header = lines[0].split(b",")
    if b"wall_time_s" in header:
        i = header.index(b"wall_time_s")
        lines = [b",".join(f for j, f in enumerate(line.split(b",")) if j != i) for line in lines]
    return hashlib.sha256(b"\n".join(lines)).hexdigest()[:16]


def resflow(*args: str) -> None:
    cmd = [sys.executable, "-m", "resflow", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(args)}\n{done.stderr}")


def main(out: Path) -> None:
    jobs = {}
    for cfg in sorted((ROOT / "configs").glob("*.yaml")):
        training = cfg.stem.startswith("train") or "\ntrain:" in cfg.read_text()  # (digits-*: 300 steps)
        extra = [*SHORT, *(WARMUP if "warmup" in cfg.stem else [])] if training else []
        jobs[f"run/{cfg.stem}"] = ["run", str(cfg), "--seeds", "2", *extra]
    jobs["sweep"] = ["sweep", "deep50", "--over", "model.depth=4,8", "--over", "model.residual=false,true", "--seeds", "2"]
    jobs["compare"] = ["compare", "deep50", "deep50-residual", "--seeds", "2"]
    jobs["compare-train"] = ["compare", "train-postln", "train-preln", "--seeds", "1", *SHORT]
    for name, args in jobs.items():
        target = out / name
        resflow(*args, "--out", str(target), "--no-plots", "--force")
        for csv in sorted(target.rglob("*.csv")):
            print(f"{csv.relative_to(out)} {fingerprint(csv)}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
