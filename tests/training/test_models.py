"""Model registry: names, parameter counts, forward shapes, unknown names.

Run: .venv/bin/python -m pytest tests/training/test_models.py -q
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from agent.errors import ConfigError
from agent.training.models import available_models, build_model, model_spec


def test_registry_lists_the_four_models() -> None:
    assert available_models() == ["mlp", "cnn-small", "cnn", "resnet-small"]


@pytest.mark.parametrize(
    ("name", "in_channels", "expected_parameters"),
    [
        ("mlp", 1, 784 * 128 + 128 + 128 * 10 + 10),
        # conv 1->16 k5: 416; conv 16->32 k5: 12,832; linear 512->10: 5,130
        ("cnn-small", 1, 18_378),
        # conv 1->32 k3: 320; conv 32->64 k3: 18,496; fc 9216->128: 1,179,776; fc 128->10: 1,290
        ("cnn", 1, 1_199_882),
        ("resnet-small", 3, 272_474),  # ResNet-20 as in He et al. (about 0.27M)
    ],
)
def test_parameter_counts_and_forward_shapes(name: str, in_channels: int, expected_parameters: int) -> None:
    spec = model_spec(name, num_classes=10, in_channels=in_channels)
    assert spec.parameter_count == expected_parameters
    model = build_model(name, num_classes=10, in_channels=in_channels)
    assert model.registry_name == name
    assert sum(p.numel() for p in model.parameters()) == expected_parameters
    batch = torch.randn(2, *spec.input_shape)
    logits = model(batch)
    assert logits.shape == (2, 10) and logits.dtype == torch.float32
    F.cross_entropy(logits, torch.arange(2)).backward()  # trainable end to end
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_cnn_small_layers_are_exactly_as_specified() -> None:
    model = build_model("cnn-small")
    assert (model.conv1.in_channels, model.conv1.out_channels, model.conv1.kernel_size) == (1, 16, (5, 5))
    assert (model.conv2.in_channels, model.conv2.out_channels, model.conv2.kernel_size) == (16, 32, (5, 5))
    assert (model.fc.in_features, model.fc.out_features) == (512, 10)


def test_other_class_counts_and_channels() -> None:
    assert build_model("cnn-small", num_classes=3, in_channels=3)(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert model_spec("mlp", in_channels=3).input_shape == (3, 32, 32)
    assert build_model("resnet-small", in_channels=1, image_size=28)(torch.randn(2, 1, 28, 28)).shape == (
        2,
        10,
    )


def test_builds_are_independent_and_seedable() -> None:
    torch.manual_seed(1)
    first = build_model("cnn-small")
    torch.manual_seed(1)
    second = build_model("cnn-small")
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
    assert first.conv1.weight.data_ptr() != second.conv1.weight.data_ptr()


def test_unknown_name_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'vit'; allowed: mlp, cnn-small, cnn, resnet-small"):
        build_model("vit")
    with pytest.raises(ConfigError, match="unknown model"):
        model_spec("")
    with pytest.raises(ConfigError, match="at least 12 x 12"):
        build_model("cnn-small", image_size=8)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("mlp", num_classes=0)
