"""Parameter packages: hash, version, byte round-trip, shape/model mismatch, NaN/Inf rejection.

Run: .venv/bin/python -m pytest tests/training/test_parameters.py -q
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from torch import nn

from agent.training.models import build_model
from agent.training.parameters import (
    NonFiniteError,
    PackageIntegrityError,
    ParameterMismatchError,
    ParameterPackage,
    find_non_finite,
    pack,
    unpack_into,
    validate_finite,
    validate_gradients,
)


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_pack_records_version_name_shapes_and_a_hash_of_everything() -> None:
    torch.manual_seed(0)
    model = build_model("cnn-small")
    package = pack(model, version=7)
    assert package.version == 7 and package.model_name == "cnn-small"
    assert package.names == tuple(model.state_dict())
    assert package.shapes[0] == (16, 1, 5, 5) and package.dtypes[0] == "torch.float32"
    assert package.nbytes == 18_378 * 4
    assert len(package.sha256) == 64 and package.sha256 == package.compute_sha256()
    assert pack(model, version=7).sha256 == package.sha256  # deterministic
    assert pack(model, version=8).sha256 != package.sha256  # the version is covered

    # the package is a snapshot: training the model afterwards changes neither it nor its hash
    with torch.no_grad():
        model.conv1.weight.add_(1.0)
    package.verify()
    assert pack(model, version=7).sha256 != package.sha256
    with pytest.raises(ValueError, match="version must be >= 0"):
        pack(model, version=-1)


def test_bytes_round_trip_restores_parameters_and_buffers_exactly() -> None:
    source = build_model("resnet-small", in_channels=3)
    source.train()
    source(torch.randn(2, 3, 8, 8))  # moves BatchNorm running statistics and num_batches_tracked
    package = ParameterPackage.from_bytes(pack(source, version=3).to_bytes())
    target = build_model("resnet-small", in_channels=3)
    assert not _state_equal(source, target)
    unpack_into(target, package)
    assert _state_equal(source, target)
    assert int(target.stages[0].bn1.num_batches_tracked) == 1


def test_corrupted_or_truncated_bytes_and_forged_versions_are_refused() -> None:
    model = build_model("mlp")
    blob = bytearray(pack(model, version=1).to_bytes())
    flipped = blob.copy()
    flipped[-5] ^= 0x01  # one bit of the last bias
    with pytest.raises(PackageIntegrityError, match="fails its sha256"):
        ParameterPackage.from_bytes(bytes(flipped))
    with pytest.raises(PackageIntegrityError, match="corrupt parameter package"):
        ParameterPackage.from_bytes(bytes(blob[:-100]))
    with pytest.raises(PackageIntegrityError, match="not a parameter package"):
        ParameterPackage.from_bytes(b"HELLO")
    forged = dataclasses.replace(pack(model, version=1), version=99)
    with pytest.raises(PackageIntegrityError, match="fails its sha256"):
        unpack_into(build_model("mlp"), forged)


def test_shape_and_model_mismatches_are_named_and_nothing_is_loaded() -> None:
    ten_classes = pack(build_model("cnn-small", num_classes=10), version=1)
    five_classes = build_model("cnn-small", num_classes=5)
    before = {k: v.clone() for k, v in five_classes.state_dict().items()}
    with pytest.raises(ParameterMismatchError, match=r"fc\.weight \(5, 512\) vs \(10, 512\)"):
        unpack_into(five_classes, ten_classes, source="peer-A")
    assert all(torch.equal(before[k], v) for k, v in five_classes.state_dict().items())

    with pytest.raises(ParameterMismatchError, match="is for model 'cnn-small', this agent trains 'mlp'"):
        unpack_into(build_model("mlp"), ten_classes)
    anonymous = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(ParameterMismatchError, match=r"missing 0\.weight, 0\.bias; unexpected conv1\.weight"):
        unpack_into(anonymous, ten_classes)


def test_non_finite_parameters_are_rejected_logged_and_never_loaded(caplog: pytest.LogCaptureFixture) -> None:
    poisoned = build_model("cnn-small")
    with torch.no_grad():
        poisoned.conv2.bias[3] = float("nan")
        poisoned.fc.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError) as refused:
        pack(poisoned, version=1)
    assert refused.value.names == ["conv2.bias", "fc.weight"]

    package = pack(poisoned, version=1, check_finite=False)
    target = build_model("cnn-small")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="hypergpu.params"), pytest.raises(NonFiniteError):
        unpack_into(target, package, source="12D3KooWbad")
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    record = caplog.records[-1]
    assert record.name == "hypergpu.params"
    assert "12D3KooWbad" in record.getMessage() and "conv2.bias" in record.getMessage()


def test_find_non_finite_and_gradient_validation() -> None:
    clean, nan, inf = torch.zeros(3), torch.tensor([1.0, float("nan")]), torch.tensor([-float("inf")])
    assert find_non_finite({"a": clean, "b": nan, "c": inf}) == ["b", "c"]
    assert find_non_finite([clean, inf]) == ["#1"]
    assert find_non_finite([("x", torch.tensor([1, 2])), ("y", nan.half())]) == ["y"]  # ints cannot be NaN
    assert find_non_finite([]) == []
    validate_finite({"a": clean})  # no error

    model = build_model("mlp")
    validate_gradients(model)  # no gradients yet: nothing to reject
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    validate_gradients(model)
    model.fc2.bias.grad[0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"gradients from local hold NaN/Inf in fc2\.bias"):
        validate_gradients(model)


def test_header_hash_and_tensors_sent_separately_rebuild_the_package() -> None:
    source = build_model("cnn-small")
    package = pack(source, version=4)
    rebuilt = ParameterPackage.from_header(package.header(), package.sha256, list(package.tensors))
    target = build_model("cnn-small")
    unpack_into(target, rebuilt)
    assert _state_equal(source, target) and rebuilt.version == 4
    lying = {**package.header(), "version": 5}
    with pytest.raises(PackageIntegrityError, match="fails its sha256"):
        ParameterPackage.from_header(lying, package.sha256, package.tensors).verify()
    reshaped = {**package.header(), "shapes": [[1], *package.header()["shapes"][1:]]}
    with pytest.raises(PackageIntegrityError, match="header says"):
        ParameterPackage.from_header(reshaped, package.sha256, package.tensors).verify()
