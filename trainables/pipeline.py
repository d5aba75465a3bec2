"""The batch pipeline: uint8 images on the trial's device → augmented, normalised float batches.

Everything is a batched tensor op on the device that trains (no PIL, no per-image
Python, no DataLoader workers): an epoch draws one permutation, batches are index
slices of it, and augmentation runs on the whole batch at once. Each step is a
config option (``base.data``), so every study's preprocessing is expressible:

    resize        MNIST 28 → 32, or upsampling for ImageNet-style nets
    crop_padding  random crop with zero padding (CIFAR's pad-4 crop)
    flip          random horizontal flip
    rotation_deg  random rotation in [-deg, +deg]
    color_jitter  brightness, contrast and saturation factors in [1-s, 1+s]
    channels      repeat grey to 3 channels
    normalize     dataset mean/std, 0.5/0.5, /255 only ("unit"), or ImageNet's
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.nn import functional as F

from trainables.config import DataConfig
from trainables.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BatchPipeline:
    """Turns uint8 (B, C, H, W) batches into model inputs; augmentation only when ``train``."""

    def __init__(
        self,
        config: DataConfig,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        in_channels: int,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.out_channels = config.channels or in_channels
        if self.out_channels != in_channels and in_channels != 1:
            raise ConfigError(
                "",
                "data.channels",
                f"can only repeat grey images to 3 channels; these images have {in_channels} channels, "
                f"so leave it unset or set it to {in_channels}",
            )
        mean_t, std_t = _normalisation(config.normalize, mean, std)
        if len(mean_t) != self.out_channels:  # grey statistics repeated for repeated channels
            mean_t, std_t = mean_t[:1] * self.out_channels, std_t[:1] * self.out_channels
        self.mean = torch.tensor(mean_t, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std_t, device=self.device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std on uint8 input, as (x - 255 mean) / (255 std) in place; division keeps
        # the bounds exact (a multiply by a rounded reciprocal lands just outside [-1, 1]).
        self.mean_uint8 = self.mean * 255.0
        self.std_uint8 = self.std * 255.0

    @property
    def output_size(self) -> int | None:
        return self.config.resize

    def __call__(self, images: Tensor, train: bool, generator: torch.Generator | None = None) -> Tensor:
        # Pixels stay uint8 through crop and flip (a quarter of the memory traffic of float32);
        # conversion and normalisation then run in place. Zero padding is black
        # either way, so the result equals cropping after conversion.
        x = images.to(self.device, non_blocking=True)
        aug = self.config.augment
        if self.config.resize and x.shape[-1] != self.config.resize:
            x = F.interpolate(
                x.float().div_(255.0), size=(self.config.resize,) * 2, mode="bilinear", align_corners=False
            )
        if train:
            if aug.crop_padding:  # the flip rides along in the crop's gather: one pass instead of three
                x = random_crop(x, aug.crop_padding, generator, flip=aug.flip)
            elif aug.flip:
                x = random_flip(x, generator)
            if aug.rotation_deg or aug.color_jitter:
                x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
            if aug.rotation_deg:
                x = random_rotation(x, aug.rotation_deg, generator)
            if aug.color_jitter:
                x = color_jitter(x, aug.color_jitter, generator)
        if x.dtype == torch.uint8:
            x = x.float()
            mean, std = self.mean_uint8, self.std_uint8
        else:
            mean, std = self.mean, self.std
        if x.shape[1] == self.out_channels:  # x is a fresh float tensor made above: safe to change in place
            x = x.sub_(mean).div_(std)
        else:  # grey repeated to 3 channels: broadcasting against the 3-channel statistics repeats it
            x = (x - mean) / std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _normalisation(kind: str, mean: tuple[float, ...], std: tuple[float, ...]):
    if kind == "dataset":
        return tuple(mean), tuple(std)
    if kind == "half":
        return (0.5,) * len(mean), (0.5,) * len(mean)
    if kind == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.0,) * len(mean), (1.0,) * len(mean)  # "unit": pixels / 255, as the Keras studies did


def _uniform(n: int, low: float, high: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(n, generator=generator, device=generator.device if generator else like.device)
    # non_blocking: a blocking host→device copy would synchronise the stream once per batch; the
    # pageable source is staged before the call returns, so the temporary may be freed.
    return (low + (high - low) * u).to(like.device, non_blocking=True)


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None, flip: bool = False) -> Tensor:
    """Pad each image by ``padding`` zeros and crop back to its size at a random offset.

    With ``flip`` a random half of the crops is also mirrored left–right, drawing the
    same random numbers as ``random_flip`` after ``random_crop``, so the result is identical.
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = (_uniform(b, 0, 1, x, generator) * (2 * padding + 1)).long().clamp_(max=2 * padding)
    dx = (_uniform(b, 0, 1, x, generator) * (2 * padding + 1)).long().clamp_(max=2 * padding)
    cols = torch.arange(w, device=x.device).expand(b, w)
    if flip:
        mirrored = (_uniform(b, 0, 1, x, generator) < 0.5)[:, None]
        cols = torch.where(mirrored, cols.flip(-1), cols)
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + cols
    # One gather over flattened pixels: several times faster than 4-D advanced indexing on CPU.
    flat = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)


def random_flip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror a random half of the batch left–right."""
    flip = _uniform(x.shape[0], 0, 1, x, generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_rotation(x: Tensor, max_deg: float, generator: torch.Generator | None = None) -> Tensor:
    """Rotate each image by a random angle in [-max_deg, max_deg], filling with zeros."""
    angle = _uniform(x.shape[0], -max_deg, max_deg, x, generator) * (math.pi / 180)
    cos, sin = angle.cos(), angle.sin()
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def color_jitter(x: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """Random brightness, contrast and (for colour images) saturation in [1-s, 1+s]."""
    b = x.shape[0]
    low, high = max(0.0, 1 - strength), 1 + strength
    x = x * _uniform(b, low, high, x, generator)[:, None, None, None]
    grey = x.mean(dim=1, keepdim=True) if x.shape[1] == 1 else (x * _LUMA.to(x.device)).sum(1, keepdim=True)
    mean = grey.mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * _uniform(b, low, high, x, generator)[:, None, None, None] + mean
    if x.shape[1] == 3:
        grey = (x * _LUMA.to(x.device)).sum(1, keepdim=True)
        x = (x - grey) * _uniform(b, low, high, x, generator)[:, None, None, None] + grey
    return x.clamp_(0.0, 1.0)


_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def batch_indices(
    num_items: int, batch_size: int, generator: torch.Generator | None, device: torch.device | str, shuffle: bool
) -> Iterator[Tensor]:
    """Index slices of one epoch's permutation; a last batch of a single image is dropped (batch norm)."""
    if shuffle:
        order = torch.randperm(num_items, generator=generator, device=generator.device if generator else "cpu")
        order = order.to(device)
    else:
        order = torch.arange(num_items, device=device)
    for start in range(0, num_items, batch_size):
        idx = order[start : start + batch_size]
        if shuffle and len(idx) < 2:
            break
        yield idx
