"""Dataset plugins by name: ``mnist`` (IDX files), ``cifar10`` (python-pickle batches), ``synthetic``.

``load_dataset(name, data_dir, split)`` returns a :class:`LoadedDataset`: float32 images N x C x H x W,
already normalized, int64 labels, and a fingerprint (sha256 of the source files, or of the generation
parameters) that keys every cache derived from the data (decoded arrays here, shards in sharding.py).

Decoded uint8 arrays are cached as ``.npy`` under ``~/.cache/hypergpu/datasets/<fingerprint>/`` (or
``$HYPERGPU_CACHE_DIR/datasets``) so a second load skips gzip and pickle; the cache is only an
accelerator: a damaged entry is decoded again from the source files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from agent.errors import ConfigError, DatasetError

log = logging.getLogger("hypergpu.data")

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


@dataclass(frozen=True)
class LoadedDataset:
    """One split of a dataset, in memory, ready for training.

    ``images``: float32, N x C x H x W, normalized per channel. ``labels``: int64, N, in
    ``[0, num_classes)``. ``fingerprint``: sha256 hex identifying the exact data (cache key).
    """

    name: str
    split: Split
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    fingerprint: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def default_cache_root() -> Path:
    """``$HYPERGPU_CACHE_DIR`` if set, else ``~/.cache/hypergpu``."""
    configured = os.environ.get("HYPERGPU_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "hypergpu"


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks of ``chunk_bytes``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint_files(plugin: str, split: str, files: list[Path]) -> str:
    digest = hashlib.sha256(f"{plugin}:{split}".encode())
    for path in files:
        digest.update(f"\n{path.name}:{sha256_file(path)}".encode())
    return digest.hexdigest()


def _normalize(images_u8: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 ``(x / 255 - mean[c]) / std[c]``."""
    channels = images_u8.shape[1]
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(1, channels, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32)
    # np.require copies only read-only input (arrays viewing the file's bytes), which torch cannot wrap
    images = torch.from_numpy(np.require(images_u8, requirements="W")).to(torch.float32)
    return images.mul_(scale).sub_(shift.view(1, channels, 1, 1))


class DatasetPlugin(ABC):
    """A named dataset. Subclasses read their raw format; normalization and caching live here."""

    name: ClassVar[str]
    num_classes: ClassVar[int]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]

    @abstractmethod
    def source_files(self, data_dir: Path | None, split: Split) -> list[Path]:
        """The files that hold ``split``; raises DatasetError naming what is missing and what to do."""

    @abstractmethod
    def decode(self, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images N x C x H x W and integer labels N from ``files``; DatasetError when corrupt."""

    def load(self, data_dir: Path | None, split: Split, cache_dir: Path | None) -> LoadedDataset:
        files = self.source_files(data_dir, split)
        fingerprint = _fingerprint_files(self.name, split, files)
        decoded = _read_cache(cache_dir, fingerprint) if cache_dir is not None else None
        if decoded is None:
            decoded = self.decode(files)
            if cache_dir is not None:
                _write_cache(cache_dir, fingerprint, *decoded)
        images_u8, labels = decoded
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DatasetError(
                f"{self.name} {split}: labels outside 0..{self.num_classes - 1} in {files[-1]}; "
                "the file is corrupt, replace it"
            )
        return LoadedDataset(
            name=self.name,
            split=split,
            images=_normalize(images_u8, self.mean, self.std),
            labels=torch.from_numpy(labels.astype(np.int64)),
            num_classes=self.num_classes,
            fingerprint=fingerprint,
        )


# ---- decoded-array cache -------------------------------------------------------------------------------


def _read_cache(cache_dir: Path, fingerprint: str) -> tuple[np.ndarray, np.ndarray] | None:
    entry = cache_dir / fingerprint
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        images = np.load(entry / "images.npy", allow_pickle=False)
        labels = np.load(entry / "labels.npy", allow_pickle=False)
        intact = (
            meta.get("images_shape") == list(images.shape)
            and meta.get("labels_len") == len(labels)
            and images.dtype == np.uint8
            and meta.get("labels_sha256") == hashlib.sha256(labels.tobytes()).hexdigest()
            and meta.get("images_sha256") == hashlib.sha256(images.tobytes()).hexdigest()
        )
    except (OSError, ValueError):
        intact = False
    if not intact:
        log.warning("removing damaged dataset cache entry %s; decoding the source files again", entry)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return images, labels


def _write_cache(cache_dir: Path, fingerprint: str, images: np.ndarray, labels: np.ndarray) -> None:
    staging: Path | None = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{fingerprint[:12]}-", dir=cache_dir))
        np.save(staging / "images.npy", images)
        np.save(staging / "labels.npy", labels)
        meta = {
            "images_shape": list(images.shape),
            "labels_len": len(labels),
            "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
            "images_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
        }
        (staging / "meta.json").write_text(json.dumps(meta))
        # atomic: readers see a whole entry or none. It fails harmlessly when another agent on this
        # host has just written the same entry.
        staging.rename(cache_dir / fingerprint)
        staging = None
    except OSError as error:  # the cache only saves time; training goes on without it
        if not (cache_dir / fingerprint).is_dir():
            log.warning("could not write dataset cache in %s: %s", cache_dir, error)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


# ---- MNIST ---------------------------------------------------------------------------------------------

MNIST_FILES: dict[Split, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
}
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


def default_mnist_dir() -> Path:
    """``$HYPERGPU_MNIST_DIR`` if set, else ``~/.cache/hypergpu/mnist``."""
    configured = os.environ.get("HYPERGPU_MNIST_DIR")
    return Path(configured).expanduser() if configured else default_cache_root() / "mnist"


def _find_idx(folder: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` (plain preferred, else .gz) in ``folder`` or torchvision's ``MNIST/raw``."""
    for base in (folder, folder / "MNIST" / "raw"):
        for candidate in (base / stem, base / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DatasetError(
            f"cannot read {path} ({error}); the file is corrupt or truncated: delete it and fetch it again"
        ) from error


def parse_idx(data: bytes, expected_magic: int, source: Path) -> np.ndarray:
    """Decode an IDX unsigned-byte array (big-endian header: magic, then one uint32 per dimension)."""
    if len(data) < 8:
        raise DatasetError(f"{source} is too short to be an IDX file ({len(data)} bytes); replace it")
    magic = int.from_bytes(data[0:4], "big")
    if magic != expected_magic:
        raise DatasetError(
            f"{source} has IDX magic {magic}, expected {expected_magic}; "
            "it is not the right MNIST file (images and labels swapped?) or it is corrupt"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected_bytes = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected_bytes:
        raise DatasetError(
            f"{source} holds {len(data)} bytes but its header {list(dims)} needs {expected_bytes}; "
            "the file is truncated or corrupt: delete it and fetch it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


class MnistDataset(DatasetPlugin):
    """MNIST from the four IDX files (.gz or plain), in DIR/ or torchvision's DIR/MNIST/raw/."""

    name = "mnist"
    num_classes = 10
    mean = (0.1307,)
    std = (0.3081,)

    def source_files(self, data_dir: Path | None, split: Split) -> list[Path]:
        folder = data_dir.expanduser() if data_dir is not None else default_mnist_dir()
        stems = MNIST_FILES[split]
        found = [_find_idx(folder, stem) for stem in stems]
        if None in found and data_dir is None and "HYPERGPU_MNIST_DIR" not in os.environ:
            download_mnist(folder)
            found = [_find_idx(folder, stem) for stem in stems]
        missing = [stem for stem, path in zip(stems, found, strict=True) if path is None]
        if missing:
            raise DatasetError(
                f"MNIST file {missing[0]}(.gz) not found in {folder} (nor in {folder / 'MNIST' / 'raw'}); "
                "put the four IDX files there, or pass --data-dir / set HYPERGPU_MNIST_DIR to their folder"
            )
        return [path for path in found if path is not None]

    def decode(self, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        images_path, labels_path = files
        images = parse_idx(_read_maybe_gzip(images_path), IDX_IMAGES_MAGIC, images_path)
        labels = parse_idx(_read_maybe_gzip(labels_path), IDX_LABELS_MAGIC, labels_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DatasetError(f"{images_path} holds images of shape {images.shape[1:]}, expected 28 x 28")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DatasetError(
                f"{labels_path} holds {labels.shape[0]} labels but {images_path} holds {images.shape[0]} "
                "images; the two files do not belong together"
            )
        return images.reshape(-1, 1, 28, 28), labels


def verify_mnist_file(path: Path, name: str | None = None) -> None:
    """Raise DatasetError unless ``path`` has the published sha256 of the MNIST .gz file ``name``
    (default: the file's own name)."""
    name = name or path.name
    expected = MNIST_SHA256.get(name)
    if expected is None:
        raise DatasetError(f"{name} is not one of the MNIST files {sorted(MNIST_SHA256)}")
    actual = sha256_file(path)
    if actual != expected:
        raise DatasetError(
            f"{path} has sha256 {actual[:16]}..., expected {expected[:16]}... for {name}; "
            "the file is corrupt: delete it and download it again"
        )


def download_mnist(folder: Path, mirrors: tuple[str, ...] | None = None, timeout_s: float = 60.0) -> Path:
    """Fetch the four MNIST .gz files into ``folder`` (skipping valid ones) and verify their sha256.

    ``mirrors`` are URL prefixes tried in order (default MNIST_MIRRORS; ``file://`` works too);
    ``timeout_s`` bounds each request. Each file is written to ``NAME.part`` and renamed only once
    its checksum matches.
    Returns ``folder``; raises DatasetError when a file cannot be obtained from any mirror.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in MNIST_SHA256:
        target = folder / name
        if target.is_file():
            try:
                verify_mnist_file(target)
                continue
            except DatasetError:
                log.warning("%s fails its checksum; downloading it again", target)
        failures = []
        for mirror in mirrors or MNIST_MIRRORS:
            partial = folder / f"{name}.part"
            url = mirror + name
            try:
                log.info("downloading %s", url)
                with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as out:
                    shutil.copyfileobj(response, out)
                verify_mnist_file(partial, name)
                partial.rename(target)
                break
            except (OSError, urllib.error.URLError, DatasetError) as error:
                failures.append(f"{url}: {error}")
                partial.unlink(missing_ok=True)
        else:
            raise DatasetError(
                f"could not download MNIST file {name} ({'; '.join(failures)}); "
                f"copy the IDX files into {folder} by hand or pass --data-dir"
            )
    return folder


# ---- CIFAR-10 ------------------------------------------------------------------------------------------

CIFAR10_BATCHES: dict[Split, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a batch file cannot run code when loaded."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 carry bytes
    }

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


class Cifar10Dataset(DatasetPlugin):
    """CIFAR-10 python-pickle batches (data_batch_1..5, test_batch) in DIR/ or DIR/cifar-10-batches-py/."""

    name = "cifar10"
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def source_files(self, data_dir: Path | None, split: Split) -> list[Path]:
        folder = data_dir.expanduser() if data_dir is not None else default_cache_root() / "cifar10"
        if (folder / "cifar-10-batches-py").is_dir():
            folder = folder / "cifar-10-batches-py"
        files = [folder / batch for batch in CIFAR10_BATCHES[split]]
        for path in files:
            if not path.is_file():
                raise DatasetError(
                    f"CIFAR-10 batch {path.name} not found in {folder}; extract cifar-10-python.tar.gz "
                    "there, or pass --data-dir with the folder that holds cifar-10-batches-py"
                )
        return files

    def decode(self, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for path in files:
            try:
                with path.open("rb") as handle:
                    batch = _ArrayOnlyUnpickler(handle, encoding="bytes").load()
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                batch_labels = np.asarray(batch[b"labels"], dtype=np.int64)
            except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as error:
                raise DatasetError(
                    f"cannot read CIFAR-10 batch {path} ({type(error).__name__}: {error}); "
                    "the file is corrupt or not in the python-pickle format: replace it"
                ) from error
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch_labels) != data.shape[0]:
                raise DatasetError(
                    f"{path} holds data of shape {data.shape} with {len(batch_labels)} labels; expected "
                    "N x 3072 with N labels"
                )
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(batch_labels)
        return np.concatenate(images), np.concatenate(labels)


# ---- synthetic -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticSpec:
    """Generation parameters of a synthetic dataset. Each class is a fixed random prototype image plus
    Gaussian noise of standard deviation ``noise`` (prototype entries are standard normal), so the
    class is recoverable by a nearest-prototype rule; the whole is scaled to unit variance."""

    num_samples: int = 12_000
    num_classes: int = 10
    shape: tuple[int, int, int] = (1, 28, 28)
    noise: float = 1.0
    seed: int = 0

    def fingerprint(self, split: str) -> str:
        payload = {"plugin": "synthetic", "split": split, "version": 1, **self.__dict__}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


SYNTHETIC_DEFAULTS: dict[Split, SyntheticSpec] = {
    "train": SyntheticSpec(num_samples=12_000),
    "test": SyntheticSpec(num_samples=2_000),
}


def make_synthetic(spec: SyntheticSpec, split: Split = "train") -> LoadedDataset:
    """Generate ``spec.num_samples`` samples, balanced over classes, deterministically from the seed.

    Both splits share the class prototypes; their samples and noise come from different streams.
    """
    if spec.num_samples < 0 or spec.num_classes < 2 or spec.noise < 0:
        raise ConfigError(
            f"synthetic dataset: num_samples={spec.num_samples}, num_classes={spec.num_classes}, "
            f"noise={spec.noise}; need num_samples >= 0, num_classes >= 2, noise >= 0"
        )
    prototypes = np.random.default_rng([spec.seed, 0]).standard_normal((spec.num_classes, *spec.shape))
    rng = np.random.default_rng([spec.seed, 1 + SPLITS.index(split)])
    labels = rng.permutation(np.arange(spec.num_samples) % spec.num_classes)
    noise = rng.standard_normal((spec.num_samples, *spec.shape), dtype=np.float32)
    images = (prototypes[labels].astype(np.float32) + spec.noise * noise) / np.float32(
        np.sqrt(1.0 + spec.noise**2)
    )
    return LoadedDataset(
        name="synthetic",
        split=split,
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=spec.num_classes,
        fingerprint=spec.fingerprint(split),
    )


class SyntheticDataset(DatasetPlugin):
    """Generated, separable data for quick tests; ``data_dir`` is ignored."""

    name = "synthetic"
    num_classes = 10
    mean = (0.0,)
    std = (1.0,)

    def source_files(self, data_dir: Path | None, split: Split) -> list[Path]:
        return []

    def decode(self, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError("synthetic data is generated, not decoded")

    def load(self, data_dir: Path | None, split: Split, cache_dir: Path | None) -> LoadedDataset:
        return make_synthetic(SYNTHETIC_DEFAULTS[split], split)


# ---- registry ------------------------------------------------------------------------------------------

DATASETS: dict[str, type[DatasetPlugin]] = {
    "mnist": MnistDataset,
    "cifar10": Cifar10Dataset,
    "synthetic": SyntheticDataset,
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (and by ``training.dataset`` in the run config)."""
    return list(DATASETS)


def load_dataset(
    name: str,
    data_dir: Path | None,
    split: Split,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> LoadedDataset:
    """Load ``split`` of dataset ``name`` from ``data_dir`` (None = the plugin's default folder).

    ``cache_dir``: where decoded arrays are cached (None = ``default_cache_root() / "datasets"``);
    ``use_cache=False`` always decodes the source files. Raises ConfigError for an unknown name or
    split, DatasetError for missing or corrupt files.
    """
    plugin = DATASETS.get(name)
    if plugin is None:
        raise ConfigError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if use_cache and cache_dir is None:
        cache_dir = default_cache_root() / "datasets"
    return plugin().load(data_dir, split, cache_dir if use_cache else None)
