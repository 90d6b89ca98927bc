"""The local part of training: H optimizer steps of batch B on this agent's shard, and evaluation.

Knows nothing of hivemind, the TUI or the chain; the swarm layer calls :meth:`LocalTrainer.train_steps`
between averaging rounds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger("hypergpu.training")


@dataclass(frozen=True)
class StepsResult:
    """What a call to :meth:`LocalTrainer.train_steps` did.

    ``compute_seconds`` is wall time spent in forward/backward/step; ``skipped`` counts batches whose loss or
    gradient was NaN/Inf and were therefore not applied.
    """

    steps: int
    samples: int
    loss: float
    grad_norm: float
    compute_seconds: float
    skipped: int


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of the current model on some evaluation samples."""

    correct: int
    total: int
    loss: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


class LocalTrainer:
    """SGD with momentum on one shard.

    Args:
        model: the network, already on ``device``.
        images: float32 tensor N x C x H x W (the whole training split; the shard selects rows).
        labels: int64 tensor N.
        shard: indices of the rows this agent trains on.
        batch_size: samples per optimizer step.
        learning_rate, momentum, weight_decay: SGD hyper-parameters.
        grad_clip_norm: clip the global gradient L2 norm to this value (None = no clipping).
        device: torch device for computation.
        seed: seeds the shuffling so runs are reproducible.
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        shard: np.ndarray,
        *,
        batch_size: int,
        learning_rate: float,
        momentum: float,
        weight_decay: float,
        grad_clip_norm: float | None,
        device: torch.device,
        seed: int,
    ) -> None:
        self.model = model
        self.device = device
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.grad_clip_norm = grad_clip_norm
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=learning_rate, momentum=momentum, weight_decay=weight_decay
        )
        self.loss_fn = nn.CrossEntropyLoss()
        self._rng = np.random.default_rng(seed)
        self._order = np.empty(0, dtype=np.int64)
        self._cursor = 0
        self.shard = np.asarray(shard, dtype=np.int64)
        self.samples_seen = 0
        self.steps_done = 0
        self.epochs_done = 0.0
        self.set_shard(self.shard)

    def set_shard(self, shard: np.ndarray) -> None:
        """Train on ``shard`` from the next batch on (the current batch, if any, has already finished)."""
        if len(shard) == 0:
            raise ValueError("empty shard: this agent has no training samples")
        self.shard = np.asarray(shard, dtype=np.int64)
        self._reshuffle()

    def _reshuffle(self) -> None:
        self._order = self._rng.permutation(self.shard)
        self._cursor = 0

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cursor + self.batch_size > len(self._order):
            self._reshuffle()
        end = min(self._cursor + self.batch_size, len(self._order))
        index = torch.from_numpy(self._order[self._cursor : end]).to(self.device)
        self._cursor = end
        return self.images.index_select(0, index), self.labels.index_select(0, index)

    def train_steps(self, steps: int) -> StepsResult:
        """Run ``steps`` optimizer steps; returns totals. Non-finite batches are skipped and logged."""
        self.model.train()
        started = time.perf_counter()
        loss_sum, norm_sum, samples, skipped = 0.0, 0.0, 0, 0
        for _ in range(steps):
            inputs, targets = self._next_batch()  # inputs: B x C x H x W, targets: B
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(inputs), targets)
            loss.backward()
            max_norm = self.grad_clip_norm if self.grad_clip_norm is not None else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
            if not (math.isfinite(grad_norm) and math.isfinite(loss.item())):
                skipped += 1
                log.warning(
                    "skipped a batch with non-finite loss or gradient (loss=%s, norm=%s)", loss, grad_norm
                )
                continue
            self.optimizer.step()
            loss_sum += loss.item()
            norm_sum += grad_norm
            samples += len(targets)
        done = steps - skipped
        self.samples_seen += samples
        self.steps_done += done
        self.epochs_done += samples / len(self.shard)
        return StepsResult(
            steps=done,
            samples=samples,
            loss=loss_sum / done if done else math.nan,
            grad_norm=norm_sum / done if done else math.nan,
            compute_seconds=time.perf_counter() - started,
            skipped=skipped,
        )

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> EvalResult:
        """Accuracy and mean loss of the current model on ``images``/``labels`` (already on any device)."""
        self.model.eval()
        correct, loss_sum = 0, 0.0
        for start in range(0, len(labels), batch_size):
            x = images[start : start + batch_size].to(self.device)
            y = labels[start : start + batch_size].to(self.device)
            logits = self.model(x)  # b x classes
            loss_sum += float(self.loss_fn(logits, y)) * len(y)
            correct += int((logits.argmax(dim=1) == y).sum())
        total = len(labels)
        return EvalResult(correct=correct, total=total, loss=loss_sum / total if total else math.nan)
