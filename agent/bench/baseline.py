"""The single-process baseline: the same model, batch size and optimizer in one plain PyTorch process.

Used by ``hypergpu bench`` so that swarm figures are ratios against a baseline measured in the same run
on the same (shared, noisy) machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from agent.protocol.config import TrainingConfig
from agent.training.datasets import LoadedDataset, load_dataset
from agent.training.local_trainer import LocalTrainer
from agent.training.models import build_model


@dataclass(frozen=True)
class BaselineResult:
    """What the baseline did. Times exclude evaluation, which makes the baseline look as fast as it can."""

    samples: int
    train_seconds: float
    samples_per_s: float
    time_to_target_s: float | None
    final_accuracy: float
    threads: int
    curve: list[tuple[float, float, float]] = field(default_factory=list)  # (train seconds, accuracy, loss)


def whole_split_trainer(training: TrainingConfig) -> tuple[LocalTrainer, LoadedDataset]:
    """A CPU trainer over the whole training split with ``training``'s model and optimizer, and the test
    split. Both splits are loaded as an agent loads them (which also matters for speed: freeing the test
    split's decode buffers raises glibc's dynamic mmap threshold above the activation buffers' size;
    without that every step maps and unmaps them and trains ~30% slower, measured here)."""
    torch.manual_seed(training.seed)
    train = load_dataset(training.dataset, training.data_dir, "train")
    test = load_dataset(training.dataset, training.data_dir, "test")
    model = build_model(training.model, num_classes=train.num_classes, in_channels=train.images.shape[1])
    trainer = LocalTrainer(
        model,
        train.images,
        train.labels,
        np.arange(len(train.labels)),
        batch_size=training.batch_size,
        learning_rate=training.learning_rate,
        momentum=training.momentum,
        weight_decay=training.weight_decay,
        grad_clip_norm=training.grad_clip_norm,
        device=torch.device("cpu"),
        seed=training.seed,
    )
    return trainer, test


def run_baseline(training: TrainingConfig, max_seconds: float, eval_every_s: float = 1.0) -> BaselineResult:
    """Train on the whole training split with every core until the target accuracy or ``max_seconds``."""
    threads = os.cpu_count() or 1
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        trainer, test = whole_split_trainer(training)
        train_seconds, samples, reached = 0.0, 0, None
        curve: list[tuple[float, float, float]] = []
        accuracy = 0.0
        while train_seconds < max_seconds:
            started = time.perf_counter()
            chunk_end = started + eval_every_s
            while time.perf_counter() < chunk_end:
                samples += trainer.train_steps(8).samples
            train_seconds += time.perf_counter() - started
            result = trainer.evaluate(test.images, test.labels)
            accuracy = result.accuracy
            curve.append((train_seconds, accuracy, result.loss))
            if reached is None and accuracy >= training.target_accuracy:
                reached = train_seconds
                break
        return BaselineResult(
            samples=samples,
            train_seconds=train_seconds,
            samples_per_s=samples / train_seconds if train_seconds else 0.0,
            time_to_target_s=reached,
            final_accuracy=accuracy,
            threads=threads,
            curve=curve,
        )
    finally:
        torch.set_num_threads(previous_threads)
