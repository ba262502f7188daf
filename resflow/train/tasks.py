"""Training tasks that need no download: batches drawn from an explicit generator, a loss, a floor.

    teacher   (mlp) regress y = T(x), T a fixed random network width -> width (one tanh hidden layer
              of the same width), its outputs standardised to zero mean and unit variance per output;
              x as `data.input` says. Loss: mean squared error. Floor 0 (the target is noise-free);
              the best constant prediction scores ~1, so a loss stuck near 1 means nothing was learnt.
    sequence  (transformer) next-token prediction on a fixed random first-order Markov chain over
              `train.vocab` tokens, sequences of data.seq_len + 1 tokens started from its stationary
              distribution. Loss: mean cross-entropy (nats) of the next token at every position.
              Floor: the chain's entropy rate H = -sum_i pi_i sum_j P_ij ln P_ij (no predictor does
              better in expectation; the previous token is all that matters); the best constant
              prediction scores the unigram entropy H(pi); a uniform guess scores ln V.
    classify  (mlp, conv) a real dataset's labels (data.dataset, resflow.measure.datasets): batches from a
              fixed training split, each epoch in a fresh order; mean cross-entropy (nats). Floor 0;
              the best constant prediction scores the entropy of the training labels (~ln 10).
              `evaluate` gives loss and accuracy on the test split and the whole training split.

Every task has `floor` and `baseline` (the loss of the best constant prediction) per instance.
Everything random (the teacher, the chain, the embeddings, the inputs) comes from the generator handed
in, in float64 on the CPU, then is cast: the same seed gives the same task and the same batches to
every model and dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from resflow.measure.data import make_input

STANDARDISE_SAMPLES = 8192  # inputs drawn once to standardise the teacher's outputs


class TeacherTask:
    """A fixed random teacher y = standardise(W2 tanh(W1 x + b1) + b2); MSE loss."""

    name = "teacher"
    floor = 0.0  # the lowest achievable loss
    baseline = 1.0  # the loss of the best constant prediction (outputs have unit variance)

    def __init__(self, cfg, gen: torch.Generator, device, dtype):
        w = cfg.model.width
        self.data_cfg, self.width, self.device, self.dtype = cfg.data, w, device, dtype
        self.w1 = torch.randn(w, w, generator=gen, dtype=torch.float64) / w**0.5 * 2.0  # gain 2: non-linear
        self.b1 = torch.randn(w, generator=gen, dtype=torch.float64) * 0.5
        self.w2 = torch.randn(w, w, generator=gen, dtype=torch.float64) / w**0.5
        sample = self._raw(
            torch.randn(STANDARDISE_SAMPLES, w, generator=gen, dtype=torch.float64) * max(cfg.data.input_scale, 1e-12)
        )
        self.mean, self.std = sample.mean(0), sample.std(0).clamp_min(1e-12)

    def _raw(self, x):  # (B, W) float64 -> (B, W)
        return torch.tanh(x @ self.w1.T + self.b1) @ self.w2.T

    def batch(self, gen: torch.Generator, batch_size: int):
        """(x, y) on the task's device and dtype; x: (B, W), y: (B, W)."""
        x = make_input(self.data_cfg, (batch_size, self.width), gen)
        y = (self._raw(x) - self.mean) / self.std
        cast = dict(device=self.device, dtype=self.dtype)
        return x.to(**cast), y.to(**cast)

    def wrap(self, stack):
        """The model trained on this task: the stack itself (width -> width)."""
        return stack

    @staticmethod
    def loss(out, y):
        return (out - y).pow(2).mean()


def stationary(P: torch.Tensor) -> torch.Tensor:
    """The stationary distribution pi of an irreducible transition matrix P (rows sum to 1):
    pi P = pi, sum(pi) = 1, solved as a linear system (one balance equation replaced by the sum)."""
    V = P.shape[0]
    A = P.T - torch.eye(V, dtype=P.dtype)  # (P^T - I) pi = 0
    A[-1] = 1.0
    b = torch.zeros(V, dtype=P.dtype)
    b[-1] = 1.0
    return torch.linalg.solve(A, b)


def entropy_rate(P: torch.Tensor) -> float:
    """H = -sum_i pi_i sum_j P_ij ln P_ij in nats (0 ln 0 = 0), in float64."""
    P = P.double()
    pi = stationary(P)
    plogp = torch.where(P > 0, P * torch.log(P), torch.zeros_like(P))
    return float(-(pi[:, None] * plogp).sum())


def entropy(p: torch.Tensor) -> float:
    p = p.double()
    return float(-torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum())


class NextTokenModel(nn.Module):
    """tokens (B, T) -> logits (B, T, V): a learnt embedding, the stack, a learnt unembedding.

    The stack is untouched (its final norm, if it has one, is the last thing before the unembedding),
    so the recorded sites are the stack's blocks, and layer 0's input is the embedded tokens."""

    def __init__(self, stack, embed: torch.Tensor, unembed: torch.Tensor):
        super().__init__()
        self.stack = stack
        self.embed = nn.Parameter(embed)  # (V, C)
        self.unembed = nn.Parameter(unembed)  # (V, C)

    def forward(self, ids):  # (B, T) token ids
        x = F.embedding(ids, self.embed)  # (B, T, C)
        return self.stack(x) @ self.unembed.T  # (B, T, V)


class SequenceTask:
    """Next-token prediction on a fixed random Markov chain (P: V x V, rows softmax(N(0,1)/temperature))."""

    name = "sequence"

    def __init__(self, cfg, gen: torch.Generator, device, dtype):
        V, C, t = cfg.train.vocab, cfg.model.width, cfg.train.chain_temperature
        self.seq_len, self.device, self.dtype = cfg.data.seq_len, device, dtype
        logits = torch.randn(V, V, generator=gen, dtype=torch.float64) / t
        self.set_chain(torch.softmax(logits, dim=1))
        # the embedding (N(0, 1), as nn.Embedding) and unembedding (N(0, 1/width^2): logits start near 0,
        # so the first loss is about ln V) are drawn here, from the task's generator, so building the model
        # never touches torch's global RNG
        self.embed = torch.randn(V, C, generator=gen, dtype=torch.float64)
        self.unembed = torch.randn(V, C, generator=gen, dtype=torch.float64) / C

    def set_chain(self, P: torch.Tensor) -> None:
        """Use the transition matrix P (float64, rows summing to 1); floor and baseline follow from it."""
        self.P = P.double()
        self.pi = stationary(self.P)
        self.vocab = P.shape[0]
        self.floor = entropy_rate(self.P)  # the lowest achievable loss
        self.baseline = entropy(self.pi)  # the best constant prediction: the unigram distribution
        self.uniform = math.log(self.vocab)  # a uniform guess
        cdf = torch.cumsum(self.P, dim=1)  # inverse-CDF sampling: next = #{j: cdf[x, j] <= u}
        self._cdf, self._pi_cdf = cdf, torch.cumsum(self.pi, dim=0)

    def sample(self, gen: torch.Generator, batch_size: int, length: int) -> torch.Tensor:
        """(batch_size, length) token ids: x_0 ~ pi, x_{t+1} ~ P[x_t, :] (on the CPU)."""
        u = torch.rand(length, batch_size, 1, generator=gen, dtype=torch.float64)  # u[t]: (B, 1)
        last = self.vocab - 1  # a u beyond the rounded cumulative sum lands on the last token
        x = torch.empty(length, batch_size, dtype=torch.long)
        x[0] = torch.searchsorted(self._pi_cdf, u[0, :, 0], right=True).clamp_max(last)
        for t in range(1, length):
            rows = self._cdf[x[t - 1]]  # (B, V): the cumulative transition row of each previous token
            x[t] = torch.searchsorted(rows, u[t], right=True).squeeze(1).clamp_max(last)
        return x.T.contiguous()  # (B, T)

    def batch(self, gen: torch.Generator, batch_size: int):
        """(x, y) on the task's device: x (B, T) tokens, y (B, T) the next tokens."""
        ids = self.sample(gen, batch_size, self.seq_len + 1)
        return ids[:, :-1].to(self.device), ids[:, 1:].to(self.device)

    def wrap(self, stack):
        """The model trained on this task: embed -> stack -> unembed (fresh parameters per call)."""
        cast = dict(device=self.device, dtype=self.dtype)
        return NextTokenModel(stack, self.embed.to(**cast, copy=True), self.unembed.to(**cast, copy=True))

    @staticmethod
    def loss(out, y):  # out (B, T, V) logits, y (B, T)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


EVAL_CHUNK = 512  # examples per forward when evaluating a whole split


class ClassifyTask:
    """Classify data.dataset's examples (images for conv, flattened for mlp); cross-entropy loss."""

    name = "classify"
    floor = 0.0

    def __init__(self, cfg, gen: torch.Generator, device, dtype):
        from resflow.measure.datasets import as_input, load

        self.data, self.images = load(cfg.data.dataset), cfg.model.images
        self.device, self.dtype = device, dtype
        counts = torch.bincount(self.data.train_y, minlength=self.data.classes).double()
        self.baseline = entropy(counts / counts.sum())
        cast = dict(device=device, dtype=dtype)
        self.splits = {
            split: (as_input(x, self.images).to(**cast), y.to(device))
            for split, x, y in (("train_set", self.data.train_x, self.data.train_y), ("test", self.data.test_x, self.data.test_y))
        }
        self._batches = None

    def batch(self, gen: torch.Generator, batch_size: int):
        """(x, y): the next training batch in this generator's order of the training split."""
        from resflow.measure.datasets import Batches, as_input

        if self._batches is None or self._batches.gen is not gen:
            self._batches = Batches(self.data, gen)
        x, y = self._batches.next(batch_size)
        return as_input(x, self.images).to(device=self.device, dtype=self.dtype), y.to(self.device)

    def wrap(self, model):
        """The model trained on this task: the classifier itself (built with the dataset's shapes)."""
        return model

    @staticmethod
    def loss(out, y):  # out (B, classes) logits, y (B,)
        return F.cross_entropy(out, y)

    @torch.no_grad()
    def evaluate(self, model, batch_stats: bool = False) -> dict[str, float]:
        """Loss and accuracy of the test and the whole training split, in eval mode (BatchNorm's running
        statistics; no running statistic changes); the model's mode is restored after. `batch_stats`
        (step 0, when the running statistics have seen one batch): BatchNorm normalises with each
        chunk's own statistics, as in training, and its running statistics are put back after."""
        was_training = model.training
        model.eval()
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] if batch_stats else []
        saved = [(b, b.clone()) for m in norms for b in m.buffers()]
        for m in norms:
            m.train()
        try:
            out = {}
            for split, (x, y) in self.splits.items():
                logits = torch.cat([model(x[i : i + EVAL_CHUNK]) for i in range(0, len(y), EVAL_CHUNK)])
                loss = F.cross_entropy(logits.double(), y)
                prefix = "eval" if split == "test" else split
                out["test_loss" if split == "test" else "train_set_loss"] = float(loss)
                out[f"{prefix}_accuracy"] = float((logits.argmax(1) == y).double().mean())
            return out
        finally:
            for b, value in saved:
                b.copy_(value)
            model.train(was_training)


TASKS = {
    "teacher": TeacherTask,
    "sequence": SequenceTask,
    "classify": ClassifyTask,
}


def make_task(cfg, gen: torch.Generator, device, dtype):
    return TASKS[cfg.train.task](cfg, gen, device, dtype)
