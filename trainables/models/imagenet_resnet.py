"""ImageNet-style ResNets from torchvision (7×7 stride-2 stem + max-pool), as studies S0 and S4 used them.

``weights`` is ``none``, a torchvision weights name (``IMAGENET1K_V1``,
``IMAGENET1K_V2``; downloaded on first use when online) or a path to a local
state-dict file. The head is either ``linear`` (global pooling → classes) or
S4's ``dense`` head (pooling/flatten → batch norm → dense → dropout → dense →
dropout → classes). ``input_resize`` upsamples inputs inside the model (S4
upsampled 32 → 256).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from trainables.models import MODELS


class ImageNetResNet(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        features: int,
        num_classes: int,
        pool: str,
        head: str,
        dense_widths: list[int],
        dropout: float,
        input_resize: int | None,
        feature_side: int,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.input_resize = input_resize
        self.pool = {"avg": nn.AdaptiveAvgPool2d(1), "max": nn.AdaptiveMaxPool2d(1), "flatten": nn.Identity()}[pool]
        flat = features * (feature_side**2 if pool == "flatten" else 1)
        if head == "linear":
            self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, num_classes))
        else:
            layers: list[nn.Module] = [nn.Flatten(), nn.BatchNorm1d(flat)]
            for width in dense_widths:
                layers += [nn.Linear(flat, int(width)), nn.ReLU(), nn.Dropout(dropout)]
                flat = int(width)
            self.head = nn.Sequential(*layers, nn.Linear(flat, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        if self.input_resize and x.shape[-1] != self.input_resize:
            x = F.interpolate(x, size=(self.input_resize, self.input_resize), mode="bilinear", align_corners=False)
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
        return self.head(self.pool(x))


def _backbone(arch: str, weights: str, in_channels: int) -> nn.Module:
    import torchvision.models

    builder = getattr(torchvision.models, arch)
    if weights == "none":
        net = builder(weights=None)
    elif weights.isupper() and "/" not in weights:
        net = builder(weights=weights)  # torchvision validates the name and downloads when online
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist (or use none, IMAGENET1K_V1, IMAGENET1K_V2)")
        net = builder(weights=None)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as err:  # unpickling and shape mismatches raise several types
            raise ValueError(f"weights file {path} is not a torchvision {arch} state dict ({err})") from None
    # The ImageNet pooling and 1000-class classifier are replaced by this model's head; keeping them
    # would count ~0.5M (ResNet18) or ~2M (ResNet50) parameters that never receive a gradient.
    net.avgpool, net.fc = nn.Identity(), nn.Identity()
    if in_channels != 3:
        old = net.conv1
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        # Keep the (pretrained) filters: their RGB sum, spread over the new channels, gives an image
        # with every channel equal to g the same response the RGB filters gave to grey g.
        with torch.no_grad():
            rgb_sum = old.weight.sum(dim=1, keepdim=True)
            net.conv1.weight.copy_(rgb_sum.repeat(1, in_channels, 1, 1) / in_channels)
    return net


def _side(size: int) -> int:
    """Spatial side after the stem (/4) and three stride-2 stages (/8)."""
    for _ in range(5):
        size = (size + 1) // 2
    return max(size, 1)


def _build(
    arch, features, num_classes, in_channels, input_size, weights, pool, head, dense_widths, dropout, input_resize
):
    side = _side(input_resize or input_size)
    return ImageNetResNet(
        _backbone(arch, weights, in_channels),
        features,
        num_classes,
        pool,
        head,
        list(dense_widths),
        dropout,
        input_resize,
        side,
    )


def _register(name: str, arch: str, features: int, doc: str) -> None:
    """Register one torchvision architecture; the factory's signature is what presets may set."""

    def factory(
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 224,
        weights: str = "none",
        pool: Literal["avg", "max", "flatten"] = "avg",
        head: Literal["linear", "dense"] = "linear",
        dense1: int = 128,
        dense2: int = 64,
        dropout: float = 0.0,
        input_resize: int | None = None,
    ):
        return _build(
            arch, features, num_classes, in_channels, input_size, weights, pool, head, (dense1, dense2), dropout,
            input_resize,
        )  # fmt: skip

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    MODELS.register(name)(factory)


_register("imagenet_resnet18", "resnet18", 512, "torchvision ResNet18 (ImageNet stem) with a configurable head.")
_register(
    "imagenet_resnet50",
    "resnet50",
    2048,
    "torchvision ResNet50 (ImageNet stem) with a configurable head; S0 used max pooling, S4 the dense head.",
)
