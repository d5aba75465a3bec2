"""Small CNNs: study S4's Keras-style CNN, and the compact net the quickstart searches."""

from __future__ import annotations

from torch import nn

from trainables.models import MODELS


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]


@MODELS.register("cnn_s4")
def cnn_s4(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    width: int = 32,
    dense_width: int = 512,
    conv_dropout: float = 0.25,
    dense_dropout: float = 0.5,
):
    """conv w, conv w → pool → dropout → conv 2w, conv 2w → pool → dropout → dense → dropout → out."""
    side = input_size // 4
    return nn.Sequential(
        *_conv(in_channels, width),
        *_conv(width, width),
        nn.MaxPool2d(2),
        nn.Dropout(conv_dropout),
        *_conv(width, 2 * width),
        *_conv(2 * width, 2 * width),
        nn.MaxPool2d(2),
        nn.Dropout(conv_dropout),
        nn.Flatten(),
        nn.Linear(2 * width * side * side, dense_width),
        nn.ReLU(),
        nn.Dropout(dense_dropout),
        nn.Linear(dense_width, num_classes),
    )


@MODELS.register("small_cnn")
def small_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    width: int = 32,
    dense_width: int = 128,
    dropout: float = 0.25,
):
    """Two conv blocks with batch norm and a dense head; fast on CPU, > 99% on MNIST."""
    side = input_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(2 * width * side * side, dense_width),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(dense_width, num_classes),
    )
