"""Study S3's custom ResNet for CIFAR-10: a two-conv stem, four stages of 3, 4, 6, 2 basic blocks.

The study reports 4,693,962 parameters but its text is ambiguous about the
stage widths; the default here, (64, 64, 128, 256) with a 3→64→64 stem, has
4,370,506 (see ``tests/test_models.py`` for the exact figure).
"""

from __future__ import annotations

from torch import Tensor, nn

from trainables.models import MODELS
from trainables.models.resnet import BasicBlock, make_stage


class ResNetS3(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, widths: list[int], dropout: float) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, 1, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        stages, planes = [], 64
        for i, (width, count) in enumerate(zip(widths, (3, 4, 6, 2))):
            stage, planes = make_stage(BasicBlock, planes, width, count, 1 if i == 0 else 2)
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(planes, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)))


@MODELS.register("resnet_s3")
def resnet_s3(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    widths: list[int] = (64, 64, 128, 256),
    dropout: float = 0.5,
):
    """Study S3's custom ResNet (< 5M parameters), dropout before the classifier."""
    widths = list(widths)
    if len(widths) != 4 or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"resnet_s3 widths must be four positive integers, got {widths}")
    return ResNetS3(num_classes, in_channels, widths, dropout)
