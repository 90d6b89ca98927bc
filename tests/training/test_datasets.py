"""Dataset plugins: real MNIST from the shared folder, corrupt files, checksums, CIFAR-10 batches, synthetic.

Run: .venv/bin/python -m pytest tests/training/test_datasets.py -q
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.errors import ConfigError, DatasetError
from agent.training import datasets
from agent.training.datasets import (
    MNIST_SHA256,
    SyntheticSpec,
    available_datasets,
    download_mnist,
    load_dataset,
    make_synthetic,
    verify_mnist_file,
)

REPO = Path(__file__).resolve().parents[2]
MNIST_DIR = Path(os.environ.get("HYPERGPU_MNIST_DIR", REPO / "../shared/data/mnist")).resolve()
needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(), reason=f"real MNIST not found in {MNIST_DIR}"
)

# Published class counts of MNIST (train: 60,000, test: 10,000).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write into the real ~/.cache from tests."""
    monkeypatch.setenv("HYPERGPU_CACHE_DIR", str(tmp_path / "home-cache"))


def test_registry_names_and_unknown_name() -> None:
    assert available_datasets() == ["mnist", "cifar10", "synthetic"]
    with pytest.raises(ConfigError, match=r"unknown dataset 'imagenet'; allowed: mnist, cifar10, synthetic"):
        load_dataset("imagenet", None, "train")
    with pytest.raises(ConfigError, match="unknown split 'validation'"):
        load_dataset("synthetic", None, "validation")  # type: ignore[arg-type]


@needs_mnist
def test_real_mnist_sizes_histograms_normalization_and_load_time(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    started = time.perf_counter()
    train = load_dataset("mnist", MNIST_DIR, "train", cache_dir=cache)
    cold_s = time.perf_counter() - started
    started = time.perf_counter()
    again = load_dataset("mnist", MNIST_DIR, "train", cache_dir=cache)
    warm_s = time.perf_counter() - started
    test = load_dataset("mnist", MNIST_DIR, "test", cache_dir=cache)
    print(f"MNIST train load: {cold_s:.2f} s from .gz, {warm_s:.2f} s from the decoded cache")

    assert train.images.shape == (60_000, 1, 28, 28) and train.images.dtype == torch.float32
    assert test.images.shape == (10_000, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and train.num_classes == 10
    assert torch.bincount(train.labels).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(test.labels).tolist() == MNIST_TEST_COUNTS
    # normalized with the training set's own mean/std, so it comes out at about 0 and 1
    assert abs(train.images.mean().item()) < 1e-3
    assert abs(train.images.std().item() - 1.0) < 1e-3
    # the background pixel value is (0 - 0.1307) / 0.3081
    assert train.images.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-5)
    assert len(train.fingerprint) == 64 and train.fingerprint != test.fingerprint
    assert again.fingerprint == train.fingerprint and torch.equal(again.images, train.images)
    assert torch.equal(again.labels, train.labels)
    # about 0.4 s cold and 0.2 s warm on an idle 2-core machine; generous bounds for a shared one
    assert cold_s < 10.0, f"decoding MNIST took {cold_s:.2f} s"
    assert warm_s < 10.0, f"loading the decoded cache took {warm_s:.2f} s"


def _copy_test_split(target: Path, plain: bool = False) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        if plain:
            (target / name.removesuffix(".gz")).write_bytes(gzip.decompress((MNIST_DIR / name).read_bytes()))
        else:
            shutil.copy(MNIST_DIR / name, target / name)
    return target


@needs_mnist
def test_torchvision_layout_and_plain_idx_files_give_the_same_data(tmp_path: Path) -> None:
    reference = load_dataset("mnist", MNIST_DIR, "test", use_cache=False)
    _copy_test_split(tmp_path / "tv" / "MNIST" / "raw", plain=True)
    from_torchvision_layout = load_dataset("mnist", tmp_path / "tv", "test", use_cache=False)
    assert torch.equal(from_torchvision_layout.images, reference.images)
    assert torch.equal(from_torchvision_layout.labels, reference.labels)


@needs_mnist
def test_env_var_names_the_default_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERGPU_MNIST_DIR", str(MNIST_DIR))
    assert len(load_dataset("mnist", None, "test", use_cache=False)) == 10_000


@needs_mnist
def test_decoded_cache_is_used_and_a_damaged_entry_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = load_dataset("mnist", MNIST_DIR, "test", cache_dir=cache)
    entry = cache / first.fingerprint
    assert (entry / "images.npy").is_file()

    def no_decoding(self: object, files: list[Path]) -> None:
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(datasets.MnistDataset, "decode", no_decoding)
        assert torch.equal(load_dataset("mnist", MNIST_DIR, "test", cache_dir=cache).images, first.images)

    # flip pixels in the cached array (still a valid .npy): the hash check must catch it
    original = np.load(entry / "images.npy")
    tampered = original.copy()
    tampered[0, 0, 0, :] ^= 0xFF
    np.save(entry / "images.npy", tampered)
    rebuilt = load_dataset("mnist", MNIST_DIR, "test", cache_dir=cache)
    assert torch.equal(rebuilt.images, first.images)
    assert np.array_equal(np.load(entry / "images.npy"), original)  # the entry was written again
    (entry / "labels.npy").write_bytes(b"garbage")
    assert torch.equal(load_dataset("mnist", MNIST_DIR, "test", cache_dir=cache).labels, first.labels)


def _assert_one_line(error: pytest.ExceptionInfo[DatasetError], *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert error.value.exit_code == 2
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@needs_mnist
def test_missing_truncated_and_swapped_files_raise_clear_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as missing:
        load_dataset("mnist", tmp_path / "empty", "test", use_cache=False)
    _assert_one_line(missing, "t10k-images-idx3-ubyte", "--data-dir")

    truncated_gz = _copy_test_split(tmp_path / "gz")
    blob = (truncated_gz / "t10k-images-idx3-ubyte.gz").read_bytes()
    (truncated_gz / "t10k-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError) as corrupt_gz:
        load_dataset("mnist", truncated_gz, "test", use_cache=False)
    _assert_one_line(corrupt_gz, "t10k-images-idx3-ubyte.gz", "corrupt")

    short_plain = _copy_test_split(tmp_path / "plain", plain=True)
    raw = (short_plain / "t10k-images-idx3-ubyte").read_bytes()
    (short_plain / "t10k-images-idx3-ubyte").write_bytes(raw[:-784])
    with pytest.raises(DatasetError) as short:
        load_dataset("mnist", short_plain, "test", use_cache=False)
    _assert_one_line(short, "t10k-images-idx3-ubyte", "truncated")

    swapped = _copy_test_split(tmp_path / "swapped", plain=True)
    images, labels = swapped / "t10k-images-idx3-ubyte", swapped / "t10k-labels-idx1-ubyte"
    images_bytes = images.read_bytes()
    images.write_bytes(labels.read_bytes())
    labels.write_bytes(images_bytes)
    with pytest.raises(DatasetError) as wrong_magic:
        load_dataset("mnist", swapped, "test", use_cache=False)
    _assert_one_line(wrong_magic, "magic 2049, expected 2051")


@needs_mnist
def test_checksums_verify_the_shared_files_and_reject_a_corrupt_copy(tmp_path: Path) -> None:
    for name in MNIST_SHA256:
        verify_mnist_file(MNIST_DIR / name)
    # the constants match the folder's own SHA256SUMS file
    listed = dict(line.split()[::-1] for line in (MNIST_DIR / "SHA256SUMS").read_text().splitlines())
    assert listed == MNIST_SHA256
    corrupt = tmp_path / "t10k-labels-idx1-ubyte.gz"
    blob = bytearray((MNIST_DIR / corrupt.name).read_bytes())
    blob[100] ^= 1
    corrupt.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match="sha256"):
        verify_mnist_file(corrupt)


@needs_mnist
def test_download_verifies_checksums_and_tries_the_next_mirror(tmp_path: Path) -> None:
    dead_mirror = (tmp_path / "nowhere").as_uri() + "/"
    good_mirror = MNIST_DIR.as_uri() + "/"
    target = download_mnist(tmp_path / "dl", mirrors=(dead_mirror, good_mirror))
    assert sorted(p.name for p in target.iterdir()) == sorted(MNIST_SHA256)

    bad = tmp_path / "bad-mirror"
    bad.mkdir()
    for name in MNIST_SHA256:
        (bad / name).write_bytes(b"not mnist")
    with pytest.raises(DatasetError, match="could not download MNIST file") as failed:
        download_mnist(tmp_path / "dl2", mirrors=(bad.as_uri() + "/",))
    assert "sha256" in str(failed.value)
    assert list((tmp_path / "dl2").iterdir()) == []  # nothing unverified is left behind


@needs_mnist
def test_default_folder_is_filled_by_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYPERGPU_MNIST_DIR", raising=False)
    monkeypatch.setenv("HYPERGPU_CACHE_DIR", str(tmp_path / "cache-root"))
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", (MNIST_DIR.as_uri() + "/",))
    assert len(load_dataset("mnist", None, "test")) == 10_000
    assert (tmp_path / "cache-root" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


# ---- CIFAR-10 ------------------------------------------------------------------------------------------


def _write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    with path.open("wb") as handle:
        pickle.dump({b"batch_label": b"fake", b"data": data, b"labels": labels}, handle, protocol=2)


def _fake_cifar(root: Path, per_batch: int = 6) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    all_data, all_labels = [], []
    for name in [*datasets.CIFAR10_BATCHES["train"], "test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        _write_cifar_batch(folder / name, data, labels)
        if name != "test_batch":
            all_data.append(data)
            all_labels.extend(labels)
    return np.concatenate(all_data), np.array(all_labels)


def test_cifar10_batches_are_read_in_order_and_normalized_per_channel(tmp_path: Path) -> None:
    data, labels = _fake_cifar(tmp_path)
    train = load_dataset("cifar10", tmp_path, "train", cache_dir=tmp_path / "cache")
    test = load_dataset("cifar10", tmp_path / "cifar-10-batches-py", "test", use_cache=False)
    assert train.images.shape == (30, 3, 32, 32) and len(test) == 6
    assert train.labels.tolist() == labels.tolist()
    raw = data.reshape(-1, 3, 32, 32).astype(np.float32) / 255
    mean = np.array(datasets.Cifar10Dataset.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(datasets.Cifar10Dataset.std, dtype=np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(train.images.numpy(), (raw - mean) / std, atol=1e-5)


def test_cifar10_missing_batch_bad_shape_and_code_in_pickle_are_refused(tmp_path: Path) -> None:
    _fake_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3 not found"):
        load_dataset("cifar10", tmp_path, "train", use_cache=False)

    _write_cifar_batch(folder / "test_batch", np.zeros((4, 100), dtype=np.uint8), [0, 1, 2, 3])
    with pytest.raises(DatasetError, match="expected N x 3072"):
        load_dataset("cifar10", tmp_path, "test", use_cache=False)

    class RunsCode:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.getenv, ("HOME",))

    with (folder / "test_batch").open("wb") as handle:
        pickle.dump({b"data": RunsCode(), b"labels": [0]}, handle)
    with pytest.raises(DatasetError, match="refusing to load"):
        load_dataset("cifar10", tmp_path, "test", use_cache=False)


# ---- synthetic -----------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_balanced_and_separable() -> None:
    train = load_dataset("synthetic", None, "train")
    again = load_dataset("synthetic", Path("/ignored"), "train")
    test = load_dataset("synthetic", None, "test")
    assert torch.equal(train.images, again.images) and train.fingerprint == again.fingerprint
    assert train.fingerprint != test.fingerprint
    assert torch.bincount(train.labels).tolist() == [1200] * 10
    assert not torch.equal(train.images[:100], test.images[:100])
    # class is recoverable: nearest class mean (learned on train) classifies test almost perfectly
    means = torch.stack([train.images[train.labels == c].mean(0).flatten() for c in range(10)])
    predicted = torch.cdist(test.images.flatten(1), means).argmin(1)
    accuracy = (predicted == test.labels).float().mean().item()
    assert accuracy > 0.95, accuracy


def test_synthetic_any_size_and_shape_with_its_own_fingerprint() -> None:
    small = make_synthetic(SyntheticSpec(num_samples=37, num_classes=3, shape=(3, 8, 8), seed=5))
    assert small.images.shape == (37, 3, 8, 8) and small.num_classes == 3
    assert sorted(torch.bincount(small.labels).tolist()) == [12, 12, 13]
    other_seed = make_synthetic(SyntheticSpec(num_samples=37, num_classes=3, shape=(3, 8, 8), seed=6))
    assert other_seed.fingerprint != small.fingerprint
    assert not torch.equal(other_seed.images, small.images)
    with pytest.raises(ConfigError, match="num_classes >= 2"):
        make_synthetic(SyntheticSpec(num_classes=1))
