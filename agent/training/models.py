"""Model registry by name: ``mlp``, ``cnn-small``, ``cnn``, ``resnet-small``.

``build_model(name, num_classes, in_channels)`` returns a fresh ``torch.nn.Module`` that maps a float
batch N x C x H x W to logits N x num_classes (no softmax: train with ``cross_entropy``). Inputs are
28 x 28 for one channel (MNIST) and 32 x 32 for three (CIFAR-10) unless ``image_size`` says otherwise.
Every built model carries its registry name in ``model.registry_name`` (parameter packages use it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from agent.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model is: ``input_shape`` is (C, H, W); ``parameter_count`` counts trainable
    parameters for that input shape and ``num_classes``."""

    name: str
    description: str
    input_shape: tuple[int, int, int]
    num_classes: int
    parameter_count: int


def _default_image_size(in_channels: int) -> int:
    return 28 if in_channels == 1 else 32


class MLP(nn.Module):
    """Flatten, linear -> 128, ReLU, linear -> classes (101,770 parameters on MNIST)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, hidden: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels * image_size * image_size, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))  # (N, C*H*W) -> (N, 128) -> (N, classes)


class SmallCNN(nn.Module):
    """conv 16 k5, ReLU, pool 2, conv 32 k5, ReLU, pool 2, linear 512 -> classes (18,378 on MNIST)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=5)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        side = ((image_size - 4) // 2 - 4) // 2  # 28 -> 24 -> 12 -> 8 -> 4
        if side < 1:
            raise ConfigError(f"cnn-small needs images of at least 12 x 12 pixels, got {image_size}")
        self.fc = nn.Linear(32 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 16, 12, 12) on MNIST
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 32, 4, 4)
        return self.fc(x.flatten(1))  # (N, 512) -> (N, classes)


class ExamplesCNN(nn.Module):
    """The pytorch/examples MNIST CNN: conv 32 k3, conv 64 k3, pool, dropout, fc 128, fc (1,199,882)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        side = (image_size - 4) // 2  # 28 -> 26 -> 24 -> 12
        self.fc1 = nn.Linear(64 * side * side, 128)  # 9216 -> 128 on MNIST
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))  # (N, 64, 24, 24)
        x = self.dropout1(F.max_pool2d(x, 2)).flatten(1)  # (N, 9216)
        return self.fc2(self.dropout2(F.relu(self.fc1(x))))  # (N, classes)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2): 3 stages of 16/32/64 channels with
    ``blocks_per_stage`` basic blocks each, global average pooling, linear -> classes."""

    def __init__(
        self, num_classes: int, in_channels: int, image_size: int, blocks_per_stage: int = 3
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        layers: list[nn.Module] = []
        in_planes = 16
        for stage, planes in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.stages = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (N, 64, H/4, W/4)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))  # (N, 64) -> (N, classes)


ModelFactory = Callable[[int, int, int], nn.Module]

MODELS: dict[str, tuple[ModelFactory, str]] = {
    "mlp": (MLP, "784-128-10 multilayer perceptron"),
    "cnn-small": (SmallCNN, "conv16-conv32-fc, about 18k parameters"),
    "cnn": (ExamplesCNN, "pytorch/examples MNIST CNN, about 1.2M parameters"),
    "resnet-small": (SmallResNet, "ResNet-20 for CIFAR-10, about 0.27M parameters"),
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model` (and by ``training.model`` in the run config)."""
    return list(MODELS)


def _factory(name: str) -> tuple[ModelFactory, str]:
    entry = MODELS.get(name)
    if entry is None:
        raise ConfigError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    return entry


def build_model(
    name: str, num_classes: int = 10, in_channels: int = 1, image_size: int | None = None
) -> nn.Module:
    """A freshly initialized model ``name`` for ``in_channels`` x ``image_size``² inputs (default 28
    for one channel, 32 for three) and ``num_classes`` outputs. Raises ConfigError for an unknown name
    or impossible sizes."""
    factory, _ = _factory(name)
    if num_classes < 1 or in_channels < 1:
        raise ConfigError(f"num_classes ({num_classes}) and in_channels ({in_channels}) must be >= 1")
    model = factory(num_classes, in_channels, image_size or _default_image_size(in_channels))
    model.registry_name = name
    return model


def model_spec(
    name: str, num_classes: int = 10, in_channels: int = 1, image_size: int | None = None
) -> ModelSpec:
    """Describe model ``name`` as :func:`build_model` would build it with the same arguments."""
    _, description = _factory(name)
    side = image_size or _default_image_size(in_channels)
    model = build_model(name, num_classes, in_channels, side)
    return ModelSpec(
        name=name,
        description=description,
        input_shape=(in_channels, side, side),
        num_classes=num_classes,
        parameter_count=sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
