"""The local-SGD simulation that explains the swarm's samples-to-target."""

from pathlib import Path

import pytest

from agent.bench.local_sgd import simulate
from agent.training.datasets import load_dataset

MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
pytestmark = pytest.mark.skipif(not MNIST.is_dir(), reason="the shared MNIST folder is missing")


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", MNIST, "train"), load_dataset("mnist", MNIST, "test")


def test_samples_count_every_worker_and_stop_at_the_target(mnist) -> None:
    train, test = mnist
    result = simulate(train, test, workers=3, local_steps=4, delay=0, target=0.0, max_rounds=5)
    assert result.rounds == 1 and result.samples == 3 * 4 * 64


@pytest.mark.parametrize("delay", [0, 1])
def test_averaged_workers_learn(mnist, delay: int) -> None:
    train, test = mnist
    result = simulate(train, test, workers=2, local_steps=16, delay=delay, target=0.9, max_rounds=12)
    assert result.samples is not None, result  # chance is 0.1; averaging must not destroy progress


def test_an_unreachable_target_reports_none(mnist) -> None:
    train, test = mnist
    result = simulate(train, test, workers=2, local_steps=1, delay=1, target=1.0, max_rounds=2)
    assert result.samples is None and result.rounds == 2
