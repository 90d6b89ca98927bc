"""The bare-process throughput ceiling measurement."""

from agent.bench.bare_processes import measure


def test_every_process_reports_its_throughput() -> None:
    result = measure(2, 1, seconds=1.0)
    assert result.processes == 2 and result.threads == 1
    assert result.samples_per_s > 64  # two trainers each took at least one batch of 64 in their second
