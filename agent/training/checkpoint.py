"""Atomic checkpoints of model + optimizer + round: write to a temporary file, fsync, then rename."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("hypergpu.checkpoint")

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint holds. ``round`` is the last completed averaging round; ``samples`` the total."""

    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    round: int
    samples: int
    step: int
    run_id: str
    model_name: str


def save_checkpoint(directory: Path, checkpoint: Checkpoint, keep: int = 2) -> Path:
    """Write ``checkpoint`` atomically to ``directory/checkpoint.pt``, keeping ``keep - 1`` older copies."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_NAME
    payload = {
        "model_state": {k: v.detach().cpu().clone() for k, v in checkpoint.model_state.items()},
        "optimizer_state": checkpoint.optimizer_state,
        "round": checkpoint.round,
        "samples": checkpoint.samples,
        "step": checkpoint.step,
        "run_id": checkpoint.run_id,
        "model_name": checkpoint.model_name,
        "format": 1,
    }
    fd, tmp_name = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists() and keep > 1:
            _rotate(directory, keep)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    log.debug("checkpoint saved: %s (round %d)", target, checkpoint.round)
    return target


def _rotate(directory: Path, keep: int) -> None:
    for index in range(keep - 1, 0, -1):
        older = directory / f"{CHECKPOINT_NAME}.{index}"
        newer = directory / (CHECKPOINT_NAME if index == 1 else f"{CHECKPOINT_NAME}.{index - 1}")
        if newer.exists():
            os.replace(newer, older)


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest readable checkpoint in ``directory``, or None when there is none.

    A corrupt newest file (e.g. a disk filled up mid-write by another program) falls back to the previous one.
    """
    candidates = [directory / CHECKPOINT_NAME, *sorted(directory.glob(f"{CHECKPOINT_NAME}.*"))]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:
            log.warning("checkpoint %s is unreadable; trying an older one", path, exc_info=True)
            continue
        return Checkpoint(
            model_state=data["model_state"],
            optimizer_state=data["optimizer_state"],
            round=int(data["round"]),
            samples=int(data["samples"]),
            step=int(data["step"]),
            run_id=str(data["run_id"]),
            model_name=str(data["model_name"]),
        )
    return None
