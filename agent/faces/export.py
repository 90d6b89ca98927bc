"""CSV export of the metrics history, for the web page's download link and offline analysis."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from agent.protocol.messages import TrainingMetrics
from agent.protocol.timeutil import format_utc

METRICS_CSV_COLUMNS = ("timestamp", "step", "epoch", "loss", "accuracy", "samples_per_s")


def metrics_csv(history: Iterable[TrainingMetrics]) -> str:
    """One header row (:data:`METRICS_CSV_COLUMNS`) then one row per point; a missing accuracy is empty.

    Timestamps use the project's one UTC format; ``samples_per_s`` is samples per second.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(METRICS_CSV_COLUMNS)
    for point in history:
        writer.writerow(
            (
                format_utc(point.timestamp),
                point.step,
                f"{point.epoch:.6g}",
                f"{point.loss:.6g}",
                "" if point.accuracy is None else f"{point.accuracy:.6g}",
                f"{point.samples_per_s:.6g}",
            )
        )
    return out.getvalue()
