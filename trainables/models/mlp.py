"""Study S4's MLP: flatten → dense layers (ReLU, optional dropout) → classes."""

from __future__ import annotations

from torch import nn

from trainables.models import MODELS


@MODELS.register("mlp")
def mlp(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    width: int = 64,
    depth: int = 1,
    dropout: float = 0.0,
):
    """Flatten → ``depth`` dense ReLU layers of ``width`` → ``num_classes``. S4: width 64, depth 1."""
    layers: list[nn.Module] = [nn.Flatten()]
    features = in_channels * input_size * input_size
    for _ in range(depth):
        layers += [nn.Linear(features, int(width)), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        features = int(width)
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)
