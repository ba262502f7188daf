"""resflow.integrations: the Hugging Face and Lightning callbacks, each in a real tiny training run on
the CPU. Without accumulation a recorded step's rows equal `resflow.record` on a copy of the model at
the weights before that step, on the same micro-batch (taken from inside the run by a hook); the
losses equal the framework's own logged ones; with accumulation the step boundary is the optimizer
step."""

import os

import numpy as np
import pytest
import torch
from torch import nn

import resflow
from resflow.results.files import read_run

os.environ.setdefault("HF_HUB_OFFLINE", "1")

COLUMNS = ("input_grad_norm", "activation_rms", "param_grad_norm")
RTOL = 1e-5


def assert_rows_equal(got, want):
    assert list(got["module"]) == list(want["module"])
    for col in COLUMNS:
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=RTOL, err_msg=col)


# ---------------------------------------------------------------------------------------------
# Hugging Face Trainer

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")


def tiny_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=3,
        n_embd=16,
        n_head=2,
        vocab_size=50,
        n_positions=8,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=24, seq=8, vocab=50):
        gen = torch.Generator().manual_seed(1)
        self.ids = torch.randint(vocab, (n, seq), generator=gen)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Snapshots(transformers.TrainerCallback):
    """Before each optimizer step's first forward: a copy of the model; each training forward's
    exact keyword arguments (the micro-batch, and num_items_in_batch as the Trainer passes it)."""

    def __init__(self):
        self.models, self.calls = [], []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.register_forward_pre_hook(self.pre, with_kwargs=True)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        copy_ = tiny_gpt2()
        copy_.load_state_dict(weights)
        copy_.train(model.training)
        self.models.append(copy_)
        self.calls.append([])

    def pre(self, module, args, kwargs):
        if torch.is_grad_enabled() and module.training:
            self.calls[-1].append({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})


def hf_train(tmp_path, accumulation=1, steps=3, every=1):
    from resflow.integrations.huggingface import ResflowCallback

    model = tiny_gpt2()
    cb, snaps = ResflowCallback(out=tmp_path / "res", every=every), Snapshots()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=0.05,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,  # no clipping: the parameter gradients are the backward's
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[snaps, cb])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return cb, snaps, losses


def test_huggingface_callback_equals_record_at_the_same_weights(tmp_path):
    cb, snaps, logged = hf_train(tmp_path)
    w = cb.watch
    assert w.steps == 3 and w.recorded == [0, 1, 2]
    g = w.grads
    for step in range(3):
        (call,) = snaps.calls[step]  # one micro-batch per step
        want = resflow.record(snaps.models[step], call, lambda out: out.loss).grads
        assert_rows_equal(g[g["step"] == step], want)
    assert w.train["loss"].to_numpy() == pytest.approx(logged, abs=1e-4)  # (the Trainer logs 4 digits)
    assert w.train["grad_norm_total"].notna().all()
    back = read_run(tmp_path / "res")
    assert sorted(set(back.grads["step"])) == [0, 1, 2] and not any(m._forward_hooks for m in snaps.models[0].modules())


def test_huggingface_callback_steps_at_the_optimizer_step_with_accumulation(tmp_path):
    cb, snaps, logged = hf_train(tmp_path, accumulation=2, steps=3)
    w = cb.watch
    assert w.steps == 3 and w.recorded == [0, 1, 2]  # 3 optimizer steps of 2 micro-batches, not 6 steps
    assert all(len(calls) == 2 for calls in snaps.calls)
    assert w.train["loss"].to_numpy() == pytest.approx(logged, abs=1e-4)


def test_huggingface_accumulation_gives_one_row_per_block(tmp_path):
    cb, _, _ = hf_train(tmp_path, accumulation=2, steps=2)
    g = cb.watch.grads
    assert list(g.groupby("step").size()) == [3, 3]


# ---------------------------------------------------------------------------------------------
# Lightning


def lightning():
    try:
        import pytorch_lightning as pl
    except ImportError:
        pl = pytest.importorskip("lightning.pytorch")
    return pl


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


def lit_module(pl):
    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(2)
            self.stem = nn.Linear(6, 6)
            self.blocks = nn.Sequential(*[Block(6) for _ in range(3)])
            self.head = nn.Linear(6, 3)
            self.seen = []  # (copy of the module before the step, batch) at each training_step

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)))

        def training_step(self, batch, batch_idx):
            x, y = batch
            parts = {"stem": self.stem, "blocks": self.blocks, "head": self.head}
            self.seen.append(({k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in parts.items()}, x, y))
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Lit()


def lit_data(n=24):
    gen = torch.Generator().manual_seed(3)
    data = torch.utils.data.TensorDataset(torch.randn(n, 6, generator=gen), torch.randint(3, (n,), generator=gen))
    return torch.utils.data.DataLoader(data, batch_size=4)


def lit_train(tmp_path, accumulation=1, steps=3, logger=None):
    from resflow.integrations.lightning import ResflowCallback

    pl = lightning()
    module, cb = lit_module(pl), ResflowCallback(out=tmp_path / "res")
    trainer = pl.Trainer(
        max_steps=steps,
        accumulate_grad_batches=accumulation,
        accelerator="cpu",
        devices=1,
        logger=logger if logger is not None else pl.loggers.CSVLogger(tmp_path / "logs"),
        callbacks=[cb],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, lit_data())
    return cb, module


class Plain(nn.Module):
    """The LightningModule's layers as a plain module (the same qualified names) at the weights
    `parts` saved, for `record`."""

    def __init__(self, parts):
        super().__init__()
        self.stem, self.blocks, self.head = nn.Linear(6, 6), nn.Sequential(*[Block(6) for _ in range(3)]), nn.Linear(6, 3)
        for name, weights in parts.items():
            getattr(self, name).load_state_dict(weights)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def test_lightning_callback_equals_record_at_the_same_weights(tmp_path):
    cb, module = lit_train(tmp_path)
    w = cb.watch
    assert w.steps == 3 and w.recorded == [0, 1, 2]
    g = w.grads
    losses = []
    for step, (parts, x, y) in enumerate(module.seen):
        plain = Plain(parts)
        want = resflow.record(plain, x, lambda out, y=y: nn.functional.cross_entropy(out, y))
        # record makes x require grad (block 0's input gradient); in training x needs none: compare blocks 1..
        got = g[g["step"] == step]
        assert list(got["module"]) == list(want.grads["module"])
        for col in COLUMNS:
            a, b = got[col].to_numpy(), want.grads[col].to_numpy()
            if col == "input_grad_norm":
                a, b = a[1:], b[1:]
            np.testing.assert_allclose(a, b, rtol=RTOL, err_msg=col)
        losses.append(want.meta["loss_value"])
    assert w.train["loss"].to_numpy() == pytest.approx(losses, rel=1e-6)
    assert sorted(set(read_run(tmp_path / "res").grads["step"])) == [0, 1, 2]
    assert not any(m._forward_pre_hooks for m in module.modules())


def test_lightning_callback_steps_at_the_optimizer_step_with_accumulation(tmp_path):
    cb, module = lit_train(tmp_path, accumulation=2, steps=3)
    w = cb.watch
    assert len(module.seen) == 6 and w.steps == 3 and w.recorded == [0, 1, 2]
    # the step's loss: the mean of its two micro-batches' losses
    want = []
    for k in range(3):
        pair = module.seen[2 * k : 2 * k + 2]
        want.append(sum(nn.functional.cross_entropy(Plain(p)(x), y).item() for p, x, y in pair) / 2)
    assert w.train["loss"].to_numpy() == pytest.approx(want, rel=1e-6)


def test_lightning_accumulation_gives_one_row_per_block(tmp_path):
    cb, _ = lit_train(tmp_path, accumulation=2, steps=2)
    assert list(cb.watch.grads.groupby("step").size()) == [3, 3]


def test_lightning_callback_logs_to_the_trainers_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from resflow.results.tensorboard_events import layer_tag

    logger = lightning().loggers.TensorBoardLogger(tmp_path / "tb")
    cb, _ = lit_train(tmp_path, steps=2, logger=logger)
    scalars = {}
    for file in Path(logger.log_dir).glob("events.out.tfevents.*"):  # Lightning's own file and the watch's
        acc = EventAccumulator(str(file))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    g = cb.watch.grads
    row = g[g["layer"] == 1].iloc[0]
    want = g[g["layer"] == 1]
    assert scalars[f"param_grad_norm/{layer_tag(row)}"] == {
        int(s): np.float32(v) for s, v in zip(want["step"], want["param_grad_norm"])
    }
    assert sorted(scalars["loss"]) == [0, 1]
