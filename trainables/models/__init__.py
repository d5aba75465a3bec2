"""Model registry and its front door, ``create_model``.

    from trainables.models import create_model
    net = create_model("cifar_resnet18", num_classes=10, in_channels=1)

Every factory takes ``num_classes``, ``in_channels`` and ``input_size`` (filled
in from the data set) plus its own keyword options, which a preset sets under
``base.model``. Unknown names raise an error listing the closest ones.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainables.registry import Registry

MODELS = Registry("model")


def create_model(
    name: str, /, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, **options: Any
) -> nn.Module:
    """Build registered model ``name`` for images of ``in_channels``×``input_size``² and ``num_classes``."""
    return MODELS.create(name, num_classes=num_classes, in_channels=in_channels, input_size=input_size, **options)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Importing the model modules fills the registry.
from trainables.models import cnn, imagenet_resnet, mlp, resnet, resnet_s3  # noqa: E402,F401

__all__ = ["MODELS", "count_parameters", "create_model"]
