"""Deterministic, stratified sharding of a dataset over the current members of a run.

Every member computes the same assignment from the same inputs (labels, member ids, salt), so no one
has to distribute it. The assignment is rendezvous (highest-random-weight) hashing with bounded load:

* each (sample, member) pair gets a 64-bit weight ``splitmix64(splitmix64(sample ^ salt) + member)``;
  it depends on that pair only, never on who else is a member;
* per class ``c`` with ``n_c`` samples and ``N`` members, each member has room for ``floor(n_c / N)``
  samples, and the ``n_c mod N`` members ranked highest for that class get one more;
* samples are matched to members by weight under those capacities: the result is the unique stable
  matching of the two sides (each ranks the other by the shared weight), equivalently the greedy one
  that takes pairs in decreasing weight. It is computed with vectorized deferred acceptance.

So every sample is assigned exactly once, per-class counts differ by at most one sample between
members, and when one member leaves or joins, mostly the samples it gives up or takes move (measured
in tests/training/test_sharding.py: at most about 1/N + 2% of all samples).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("hypergpu.data")

# Part of every cache key: bump it whenever the assignment for the same inputs changes.
ALGORITHM_VERSION = 1


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on a uint64 array: a bijective 64-bit mix (Steele, Lea, Flood 2014)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _key64(text: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))


def _check_members(members: Sequence[str]) -> list[str]:
    members = list(members)
    if not members:
        raise ValueError("cannot shard over an empty membership; pass at least one member id")
    if len(set(members)) != len(members):
        duplicates = sorted({m for m in members if members.count(m) > 1})
        raise ValueError(f"member ids must be unique; repeated: {', '.join(duplicates)}")
    return members


def pair_weights(num_samples: int, members: Sequence[str], salt: str = "") -> np.ndarray:
    """Rendezvous weights, uint64 of shape (num_samples, len(members)), never 0 (0 marks 'refused')."""
    sample_keys = splitmix64(np.arange(num_samples, dtype=np.uint64) ^ _key64(f"salt:{salt}"))
    member_keys = np.array([_key64(f"member:{member}") for member in members], dtype=np.uint64)
    with np.errstate(over="ignore"):
        weights = splitmix64(sample_keys[:, None] + member_keys[None, :])
    return weights | np.uint64(1)


def class_capacities(class_counts: np.ndarray, members: Sequence[str], salt: str = "") -> np.ndarray:
    """int64 (num_classes, num_members): floor(n_c / N) each, +1 for the n_c mod N top-ranked members."""
    num_members = len(members)
    capacities = np.repeat((class_counts // num_members)[:, None], num_members, axis=1)
    for label, extra in enumerate(class_counts % num_members):
        if extra:
            rank_keys = [_key64(f"extra:{salt}:{label}:{member}") for member in members]
            capacities[label, np.argsort(rank_keys, kind="stable")[::-1][:extra]] += 1
    return capacities


def assign_owners(labels: np.ndarray, members: Sequence[str], salt: str = "") -> np.ndarray:
    """For each sample, the index into ``members`` of its owner (int64, same length as ``labels``)."""
    members = _check_members(members)
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.min() < 0):
        raise ValueError("labels must be a 1-d array of non-negative class ids")
    labels = labels.astype(np.int64)
    num_samples, num_members = len(labels), len(members)
    if num_samples == 0:
        return np.zeros(0, dtype=np.int64)
    capacity = class_capacities(np.bincount(labels), members, salt).reshape(-1)
    weights = pair_weights(num_samples, members, salt)
    owner = np.full(num_samples, -1, dtype=np.int64)
    free = np.arange(num_samples)
    sample_ids = np.arange(num_samples)
    # Deferred acceptance: free samples propose to their best member not yet refused; every
    # (class, member) bucket keeps its `capacity` heaviest proposals and refuses the rest. Total
    # capacity equals the number of samples, so it ends with everyone placed (at most N rounds each).
    while free.size:
        owner[free] = weights[free].argmax(axis=1)
        # only buckets that received proposals can change: re-rank just their samples
        touched = np.zeros(capacity.size, dtype=bool)
        touched[labels[free] * num_members + owner[free]] = True
        held = np.flatnonzero(owner >= 0)
        held = held[touched[labels[held] * num_members + owner[held]]]
        bucket = labels[held] * num_members + owner[held]
        weight = weights[held, owner[held]]
        # sort by bucket, then weight descending (~weight ascending); lexsort's last key is primary
        order = np.lexsort((sample_ids[held], ~weight, bucket))
        sorted_bucket = bucket[order]
        rank = np.arange(len(order)) - np.searchsorted(sorted_bucket, sorted_bucket, side="left")
        refused = held[order[rank >= capacity[sorted_bucket]]]
        weights[refused, owner[refused]] = 0
        owner[refused] = -1
        free = refused
    return owner


def assign_shards(labels: np.ndarray, members: Sequence[str], salt: str = "") -> dict[str, np.ndarray]:
    """Split sample indices ``0..len(labels)-1`` among ``members``: {member id: sorted int64 indices}.

    ``labels``: class id per sample. ``salt``: changes the whole assignment (e.g. the run id or an
    epoch number). Every sample goes to exactly one member; per class, each member receives
    ``floor(n_c / N)`` or ``ceil(n_c / N)`` samples. Raises ValueError for empty or repeated members.
    """
    members = _check_members(members)
    owner = assign_owners(labels, members, salt)
    order = np.argsort(owner, kind="stable")  # stable: indices stay sorted within each member
    bounds = np.searchsorted(owner[order], np.arange(len(members) + 1))
    return {member: order[bounds[k] : bounds[k + 1]].astype(np.int64) for k, member in enumerate(members)}


def moved_fraction(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]) -> float:
    """Fraction of samples (those assigned in ``after``) whose owner differs from ``before``."""
    names = {name: code for code, name in enumerate(sorted({*before, *after}))}
    size = 1 + max((int(ix.max()) for ix in (*before.values(), *after.values()) if len(ix)), default=-1)
    owner_before = np.full(size, -1)
    owner_after = np.full(size, -1)
    for name, indices in before.items():
        owner_before[indices] = names[name]
    for name, indices in after.items():
        owner_after[indices] = names[name]
    assigned = owner_after >= 0
    total = int(assigned.sum())
    return float((owner_before[assigned] != owner_after[assigned]).sum()) / total if total else 0.0


def indices_checksum(indices: np.ndarray) -> str:
    """sha256 hex of the indices as little-endian int64 bytes."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()


@dataclass(frozen=True)
class Shard:
    """The samples one member trains on. ``indices``: sorted int64 positions in the dataset split;
    ``checksum``: :func:`indices_checksum` of them; ``key``: the cache key of the whole assignment."""

    member: str
    indices: np.ndarray
    checksum: str
    key: str

    def __len__(self) -> int:
        return len(self.indices)


def shard_key(dataset_fingerprint: str, labels: np.ndarray, members: Sequence[str], salt: str) -> str:
    """Cache key of an assignment: hashes the dataset, its labels, the sorted members, salt, version."""
    payload = {
        "algorithm": ALGORITHM_VERSION,
        "dataset": dataset_fingerprint,
        "labels": hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest(),
        "members": sorted(members),
        "salt": salt,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ShardCache:
    """Assignments stored on disk under ``root/<key>.npz``, one file per (dataset, membership, salt).

    The file holds each sample's owner and a sha256 of that array; a file that is unreadable or fails
    its checksum is rebuilt, never used.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def get(
        self,
        dataset_fingerprint: str,
        labels: np.ndarray,
        members: Sequence[str],
        member: str,
        salt: str = "",
    ) -> Shard:
        """The shard of ``member`` in the assignment of ``labels`` over ``members`` (computed or cached)."""
        members = sorted(_check_members(members))
        if member not in members:
            raise ValueError(f"member {member!r} is not in the membership ({len(members)} members)")
        labels = np.asarray(labels)
        key = shard_key(dataset_fingerprint, labels, members, salt)
        owner = self._read(key, len(labels))
        if owner is None:
            owner = assign_owners(labels, members, salt)
            self._write(key, owner)
        indices = np.flatnonzero(owner == members.index(member)).astype(np.int64)
        return Shard(member=member, indices=indices, checksum=indices_checksum(indices), key=key)

    def _read(self, key: str, num_samples: int) -> np.ndarray | None:
        path = self.path_for(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                owner = stored["owner"]
                checksum = str(stored["checksum"])
        except (OSError, ValueError, KeyError) as error:
            log.warning("shard cache %s is unreadable (%s); rebuilding it", path, error)
            return None
        if len(owner) != num_samples or indices_checksum(owner) != checksum:
            log.warning("shard cache %s fails its checksum; rebuilding it", path)
            return None
        return owner

    def _write(self, key: str, owner: np.ndarray) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle, staging = tempfile.mkstemp(prefix=f".{key[:12]}-", suffix=".npz", dir=self.root)
            with os.fdopen(handle, "wb") as out:
                np.savez(out, owner=owner.astype(np.int64), checksum=np.str_(indices_checksum(owner)))
            os.replace(staging, self.path_for(key))  # atomic: readers see the old file or the new one
        except OSError as error:  # the cache only saves time; the shard is still returned
            log.warning("could not write shard cache in %s: %s", self.root, error)
