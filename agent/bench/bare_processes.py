"""``python -m agent.bench.bare_processes``: what N plain PyTorch trainers get from this machine together.

Example: ``python -m agent.bench.bare_processes --processes 8 --seconds 12`` prints the samples/s of one
process with every core (the ``hypergpu bench`` baseline's setting) and of N single-thread processes
training at once, and their ratio: the ceiling of an N-agent swarm's throughput ratio on this machine
before any coordination (no hivemind, no evaluation, no averaging).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import typer

from agent.bench.baseline import whole_split_trainer
from agent.cli.swarm_cmd import DEFAULT_MNIST
from agent.protocol.config import TrainingConfig


@dataclass(frozen=True)
class BareThroughput:
    """Samples per second of ``processes`` trainers together (each with ``threads`` torch threads)."""

    processes: int
    threads: int
    samples_per_s: float


def _train(data_dir: Path, model_name: str, seconds: float, threads: int, results: mp.Queue) -> None:
    torch.set_num_threads(threads)
    training = TrainingConfig(data_dir=data_dir, model=model_name)  # the agents' defaults
    trainer, _ = whole_split_trainer(training)
    samples, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        samples += trainer.train_steps(8).samples
    results.put(samples / (time.perf_counter() - started))


def measure(
    processes: int, threads: int, *, seconds: float, data_dir: Path = DEFAULT_MNIST, model: str = "cnn-small"
) -> BareThroughput:
    """Run ``processes`` trainers at once for ``seconds`` and add up their samples/s.

    Each trains with :class:`~agent.training.local_trainer.LocalTrainer` on the whole MNIST training
    split with the run configuration's defaults (batch 64, SGD with momentum, gradient clipping), the
    code path of both the agents and the ``hypergpu bench`` baseline.
    """
    context = mp.get_context("spawn")  # fresh interpreters: nothing inherited from the caller's torch
    results = context.Queue()
    workers = [
        context.Process(target=_train, args=(data_dir, model, seconds, threads, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = sum(results.get(timeout=seconds + 120) for _ in workers)
    for worker in workers:
        worker.join()
    return BareThroughput(processes, threads, total)


def main(
    processes: Annotated[int, typer.Option(min=1, max=64, help="trainers at once")] = 8,
    seconds: Annotated[float, typer.Option(min=1, help="how long each side trains")] = 12.0,
    model: Annotated[str, typer.Option(help="model name")] = "cnn-small",
    data_dir: Annotated[Path, typer.Option(help="MNIST folder")] = DEFAULT_MNIST,
) -> None:
    """Print one process with every core, N single-thread processes, and their ratio."""
    cores = os.cpu_count() or 1
    print(f"training {model} for {seconds:g} s in 1 process, then in {processes} at once ...", flush=True)
    single = measure(1, cores, seconds=seconds, data_dir=data_dir, model=model)
    many = measure(processes, 1, seconds=seconds, data_dir=data_dir, model=model)
    print(f"1 process x {cores} threads: {single.samples_per_s:,.0f} samples/s")
    print(f"{processes} processes x 1 thread: {many.samples_per_s:,.0f} samples/s")
    print(f"ratio: {many.samples_per_s / single.samples_per_s:.2f}")


if __name__ == "__main__":
    typer.run(main)
