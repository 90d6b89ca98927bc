"""``python -m agent.bench.bare_processes``: what N plain PyTorch trainers get from this machine together.

Example: ``python -m agent.bench.bare_processes --processes 8 --seconds 12`` prints the samples/s of one
process with every core (the ``hypergpu bench`` baseline's setting) and of N single-thread processes
training at once, and their ratio: the ceiling of an N-agent swarm's throughput ratio on this machine
before any coordination (no hivemind, no evaluation, no data sharding, random batches).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from typing import Annotated

import torch
import typer

from agent.training.models import build_model


@dataclass(frozen=True)
class BareThroughput:
    """Samples per second of ``processes`` trainers together (each with ``threads`` torch threads)."""

    processes: int
    threads: int
    samples_per_s: float


def _train(model_name: str, batch_size: int, seconds: float, threads: int, results: mp.Queue) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(os.getpid())
    model = build_model(model_name, num_classes=10, in_channels=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(4096, 1, 28, 28), torch.randint(0, 10, (4096,))
    samples, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        index = torch.randint(0, len(labels), (batch_size,))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images[index]), labels[index]).backward()
        optimizer.step()
        samples += batch_size
    results.put(samples / (time.perf_counter() - started))


def measure(
    processes: int, threads: int, *, seconds: float, model: str = "cnn-small", batch_size: int = 64
) -> BareThroughput:
    """Run ``processes`` trainers at once for ``seconds`` and add up their samples/s."""
    context = mp.get_context("spawn")  # fresh interpreters: nothing inherited from the caller's torch
    results = context.Queue()
    workers = [
        context.Process(target=_train, args=(model, batch_size, seconds, threads, results))
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
    batch_size: Annotated[int, typer.Option(min=1, help="samples per step")] = 64,
) -> None:
    """Print one process with every core, N single-thread processes, and their ratio."""
    cores = os.cpu_count() or 1
    print(f"training {model} for {seconds:g} s in 1 process, then in {processes} at once ...", flush=True)
    single = measure(1, cores, seconds=seconds, model=model, batch_size=batch_size)
    many = measure(processes, 1, seconds=seconds, model=model, batch_size=batch_size)
    print(f"1 process x {cores} threads: {single.samples_per_s:,.0f} samples/s")
    print(f"{processes} processes x 1 thread: {many.samples_per_s:,.0f} samples/s")
    print(f"ratio: {many.samples_per_s / single.samples_per_s:.2f}")


if __name__ == "__main__":
    typer.run(main)
