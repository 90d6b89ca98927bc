"""``python -m agent.bench.local_sgd``: samples that N-worker local SGD needs to reach a target accuracy.

Example: ``python -m agent.bench.local_sgd --workers 8 --local-steps 32 --local-steps 8 --delay 0
--delay 1`` prints one row per (H, delay) pair.

The swarm's time to target is samples needed / samples per second. ``hypergpu bench`` measures the second
factor live; this simulation measures the first without hivemind or the network: N workers in one
process, each a :class:`~agent.training.local_trainer.LocalTrainer` on its own stratified shard, start
from the same parameters, take H local steps, and average their parameters exactly as
:class:`~agent.swarm.averaging.OverlappedAveraging` does (anchor, outer step, local progress kept). With
``delay`` 1 the average of one block arrives at the end of the next block, which is what overlapping the
round with training costs when a round takes as long as a block (about 2 s here, whatever H).
The anchor is evaluated after every round on the full test set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from agent.cli.swarm_cmd import DEFAULT_MNIST
from agent.swarm.averaging import outer_step
from agent.training.datasets import LoadedDataset, load_dataset
from agent.training.local_trainer import LocalTrainer
from agent.training.models import build_model
from agent.training.parameters import parameters_swapped
from agent.training.sharding import assign_shards


@dataclass(frozen=True)
class LocalSgdResult:
    """One simulated run: ``samples`` by all workers until the anchor reached ``target`` (None: never)."""

    workers: int
    local_steps: int
    delay: int
    samples: int | None
    rounds: int
    accuracy: float
    seconds: float


def simulate(
    train: LoadedDataset,
    test: LoadedDataset,
    *,
    workers: int,
    local_steps: int,
    delay: int,
    model: str = "cnn-small",
    batch_size: int = 64,
    learning_rate: float = 0.05,
    momentum: float = 0.9,
    outer_lr: float = 1.0,
    target: float = 0.98,
    max_rounds: int = 200,
    seed: int = 0,
) -> LocalSgdResult:
    """Run N-worker local SGD until the averaged (anchor) model reaches ``target`` on ``test``.

    Args:
        workers: N, each training on its own shard (``assign_shards``).
        local_steps: H, optimizer steps of ``batch_size`` per worker between averaging rounds.
        delay: 0 = the average is applied before the next block starts (blocking rounds);
            1 = it is applied one block later, on top of the progress made meanwhile (overlapped rounds).
        outer_lr: step of the anchor towards the average (1 = plain averaging).
        max_rounds: give up after this many rounds.
    """
    started = time.perf_counter()
    labels = train.labels.numpy()
    shards = assign_shards(labels, [f"worker-{i}" for i in range(workers)])
    torch.manual_seed(seed)
    initial = build_model(model, num_classes=train.num_classes, in_channels=train.images.shape[1])
    trainers = []
    for i in range(workers):
        net = build_model(model, num_classes=train.num_classes, in_channels=train.images.shape[1])
        net.load_state_dict(initial.state_dict())  # every worker starts from the same parameters
        trainers.append(
            LocalTrainer(
                net,
                train.images,
                train.labels,
                shards[f"worker-{i}"],
                batch_size=batch_size,
                learning_rate=learning_rate,
                momentum=momentum,
                weight_decay=0.0,
                grad_clip_norm=None,
                device=torch.device("cpu"),
                seed=seed + i,
            )
        )
    params = [list(t.model.parameters()) for t in trainers]
    anchor = [p.detach().clone() for p in params[0]]
    pending: list[tuple[list[torch.Tensor], list[list[torch.Tensor]]]] = []

    no_momentum = [torch.empty(0) for _ in anchor]  # outer_step leaves the buffer alone at momentum 0

    def apply(average: list[torch.Tensor], snapshots: list[list[torch.Tensor]]) -> None:
        with torch.no_grad():
            for j, agreed in enumerate(anchor):
                new_anchor = outer_step(agreed, average[j], no_momentum[j], outer_lr=outer_lr, momentum=0.0)
                for worker, snapshot in zip(params, snapshots, strict=True):
                    worker[j].add_(new_anchor - snapshot[j])  # keep the progress made since the snapshot
                anchor[j] = new_anchor

    evaluator = trainers[0]
    samples, accuracy = 0, 0.0
    for round_index in range(1, max_rounds + 1):
        for trainer in trainers:
            samples += trainer.train_steps(local_steps).samples
        for average, snapshots in pending:  # the round started one block ago has arrived
            apply(average, snapshots)
        pending.clear()
        snapshots = [[p.detach().clone() for p in worker] for worker in params]
        average = [torch.stack([s[j] for s in snapshots]).mean(0) for j in range(len(anchor))]
        if delay == 0:
            apply(average, snapshots)
        else:
            pending.append((average, snapshots))
        with parameters_swapped(evaluator.model, anchor):  # the agreed model, as the agents evaluate it
            accuracy = evaluator.evaluate(test.images, test.labels).accuracy
        if accuracy >= target:
            return LocalSgdResult(
                workers, local_steps, delay, samples, round_index, accuracy, time.perf_counter() - started
            )
    return LocalSgdResult(
        workers, local_steps, delay, None, max_rounds, accuracy, time.perf_counter() - started
    )


def main(
    workers: Annotated[list[int], typer.Option(help="N (repeatable)")] = [8],  # noqa: B006
    local_steps: Annotated[list[int], typer.Option(help="H (repeatable)")] = [32, 16, 8, 4],  # noqa: B006
    delay: Annotated[list[int], typer.Option(help="0 blocking, 1 overlapped (repeatable)")] = [0, 1],  # noqa: B006
    target: Annotated[float, typer.Option(help="test accuracy to reach")] = 0.98,
    model: Annotated[str, typer.Option(help="model name")] = "cnn-small",
    data_dir: Annotated[Path, typer.Option(help="MNIST folder")] = DEFAULT_MNIST,
    max_rounds: Annotated[int, typer.Option(help="give up after this many rounds")] = 200,
) -> None:
    """Print samples-to-target for every (N, H, delay), with a single worker (N=1, H=32) as the yardstick."""
    torch.set_num_threads(1)
    console = Console()
    train = load_dataset("mnist", data_dir, "train")
    test = load_dataset("mnist", data_dir, "test")
    grid = [(1, 32, 0)] + [(n, h, d) for n in workers for h in local_steps for d in delay]
    table = Table(title=f"local SGD, {model}, samples to {target:.0%} (anchor, full test set)")
    for column in ("workers N", "local steps H", "delay", "samples", "rounds", "vs 1 worker"):
        table.add_column(column, justify="right")
    single: int | None = None
    with Live(table, console=console, refresh_per_second=2):
        for n, h, d in grid:
            result = simulate(
                train, test, workers=n, local_steps=h, delay=d, model=model, target=target,
                max_rounds=max_rounds if n > 1 else 10 * max_rounds,
            )  # fmt: skip
            if n == 1:
                single = result.samples
            ratio = f"{result.samples / single:.1f}x" if result.samples and single else "-"
            table.add_row(
                str(n),
                str(h),
                str(d),
                f"{result.samples:,}" if result.samples else "not reached",
                str(result.rounds),
                ratio,
            )


if __name__ == "__main__":
    typer.run(main)
