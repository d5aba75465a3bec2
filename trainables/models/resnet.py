"""CIFAR-style ResNets: a 3×3 stem and no max-pool, so 32×32 inputs keep their resolution.

With 1 input channel and 10 classes ResNet18 has exactly 11,172,810 parameters
(study S2's count); with 3 channels, 11,173,962.
"""

from __future__ import annotations

from torch import Tensor, nn

from trainables.models import MODELS


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out)).relu()
        out = self.bn3(self.conv3(out))
        return (out + self.shortcut(x)).relu()


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


def make_stage(block: type, in_planes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    layers = []
    for s in [stride] + [1] * (blocks - 1):
        layers.append(block(in_planes, planes, s))
        in_planes = planes * block.expansion
    return nn.Sequential(*layers), in_planes


class CifarResNet(nn.Module):
    def __init__(
        self, block: type, blocks: list[int], num_classes: int, in_channels: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        stages, planes = [], 64
        for i, (width, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            stage, planes = make_stage(block, planes, width, count, 1 if i == 0 else 2)
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(self.dropout(out))


@MODELS.register("cifar_resnet18")
def cifar_resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, dropout: float = 0.0):
    """ResNet18, CIFAR stem (3×3 conv, no max-pool)."""
    return CifarResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, dropout)


@MODELS.register("cifar_resnet34")
def cifar_resnet34(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, dropout: float = 0.0):
    """ResNet34, CIFAR stem."""
    return CifarResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, dropout)


@MODELS.register("cifar_resnet50")
def cifar_resnet50(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, dropout: float = 0.0):
    """ResNet50 (bottleneck blocks), CIFAR stem."""
    return CifarResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, dropout)
