"""The degradation experiment per seed (docs/conv-resnets.md): at the last step, each seed's
training-set loss and accuracy (the whole training split, eval mode), test accuracy, and the mean
training-batch loss over the last 50 steps.

    python examples/degradation_seeds.py            # the four digits configs, 3 seeds, 300 steps (minutes)
    python examples/degradation_seeds.py --small    # 4 steps, width 4, one seed: checks that it still runs
"""

import sys

from resflow import load_config, run

SMALL = ["train.steps=4", "train.record_every=2", "model.width=4", "seeds=1"] if "--small" in sys.argv[1:] else []
CONFIGS = ["digits-plain20", "digits-plain56", "digits-res20", "digits-res56"]


def joined(values, fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in values)


print("| config | seed | train-set loss | train acc | test acc | batch loss |")
print("|---|---|---|---|---|---|")
for name in CONFIGS:
    t = run(load_config(name, SMALL)).train
    last = t["step"].max()
    end = t[t["step"] == last].sort_values("seed")
    window = t[t["step"] > last - 50]  # the last 50 steps' training batches
    batch = window.groupby("seed")["loss"].mean().sort_index()
    print(
        f"| {name.removeprefix('digits-')} | {' / '.join(str(s) for s in end['seed'])} "
        f"| {joined(end['train_set_loss'], '.3g')} | {joined(end['train_set_accuracy'], '.1%')} "
        f"| {joined(end['eval_accuracy'], '.1%')} | {joined(batch, '.2g')} |"
    )
