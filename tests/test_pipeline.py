"""The batch pipeline: shapes, each augmentation's defining property, normalisation, resize, channels.

.venv/bin/python -m pytest tests/test_pipeline.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from trainables.config import AugmentConfig, DataConfig, SyntheticConfig
from trainables.data import load_dataset
from trainables.errors import ConfigError
from trainables.pipeline import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchPipeline,
    batch_indices,
    color_jitter,
    random_crop,
    random_flip,
    random_rotation,
)


def _images(b: int = 16, c: int = 3, side: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, side, side), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pipeline(in_channels: int = 3, normalize: str = "unit", **data) -> BatchPipeline:
    augment = data.pop("augment", AugmentConfig())
    config = DataConfig(normalize=normalize, augment=augment, **data)
    return BatchPipeline(config, (0.5,) * in_channels, (0.25,) * in_channels, in_channels)


# -------------------------------------------------------------------------------- shapes


def test_shapes_and_dtype_with_every_step_on():
    augment = AugmentConfig(crop_padding=2, flip=True, rotation_deg=10, color_jitter=0.3)
    pipe = _pipeline(1, "dataset", resize=16, channels=3, augment=augment)
    out = pipe(_images(5, 1, 12), train=True, generator=_gen())
    assert out.shape == (5, 3, 16, 16) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert pipe(_images(5, 1, 12), train=False).shape == (5, 3, 16, 16)


def test_evaluation_never_augments():
    augment = AugmentConfig(crop_padding=4, flip=True, rotation_deg=30, color_jitter=0.5)
    pipe = _pipeline(3, "unit", augment=augment)
    x = _images()
    torch.testing.assert_close(pipe(x, train=False), x.float() / 255)


def test_same_generator_seed_gives_the_same_augmented_batch():
    augment = AugmentConfig(crop_padding=3, flip=True, rotation_deg=20, color_jitter=0.4)
    pipe = _pipeline(3, "half", augment=augment)
    x = _images()
    torch.testing.assert_close(pipe(x, True, _gen(5)), pipe(x, True, _gen(5)))
    assert not torch.equal(pipe(x, True, _gen(5)), pipe(x, True, _gen(6)))


# ------------------------------------------------------------------------- augmentations


def test_flip_mirrors_left_right_about_half_the_batch():
    x = torch.rand(400, 2, 5, 7)
    out = random_flip(x, _gen())
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    unchanged = (out == x).flatten(1).all(1)
    assert (mirrored ^ unchanged).all()  # every image is exactly one of the two
    assert 150 < int(mirrored.sum()) < 250
    assert torch.equal(out[mirrored][:, :, :, 0], x[mirrored][:, :, :, -1])


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    pad = 3
    x = torch.rand(64, 2, 8, 8) + 0.1  # strictly positive, so padding zeros are recognisable
    out = random_crop(x, pad, _gen())
    padded = F.pad(x, (pad,) * 4)
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert len(matches) == 1, f"image {i} is not a window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 20  # offsets cover the whole (2·pad+1)² range, not one position
    assert {dy for dy, _ in offsets} == set(range(2 * pad + 1))


def test_rotation_moves_a_dot_along_its_circle_within_the_angle_limit():
    side, radius, max_deg = 33, 10, 30.0
    x = torch.zeros(200, 1, side, side)
    centre = side // 2
    x[:, 0, centre, centre + radius] = 1.0  # a dot to the right of the centre
    out = random_rotation(x, max_deg, _gen())
    ys, xs = torch.meshgrid(torch.arange(side) - centre, torch.arange(side) - centre, indexing="ij")
    mass = out[:, 0].sum((1, 2))
    cy = (out[:, 0] * ys).sum((1, 2)) / mass
    cx = (out[:, 0] * xs).sum((1, 2)) / mass
    angles = torch.rad2deg(torch.atan2(cy, cx))
    assert torch.allclose(torch.hypot(cx, cy), torch.full_like(cx, float(radius)), atol=0.6)
    assert angles.abs().max() <= max_deg + 2
    assert angles.min() < -0.6 * max_deg and angles.max() > 0.6 * max_deg
    # The centre of rotation is the image centre: a centred disc barely changes.
    disc = ((ys**2 + xs**2) <= 36).float().expand(4, 1, side, side)
    assert (random_rotation(disc, 180.0, _gen()) - disc).abs().mean() < 0.02


@pytest.mark.parametrize("channels", [1, 3])
def test_colour_jitter_scales_brightness_within_its_range(channels):
    strength = 0.4
    value = 0.5
    x = torch.full((300, channels, 6, 6), value)  # flat grey: contrast and saturation leave it unchanged
    out = color_jitter(x, strength, _gen())
    factor = out[:, 0, 0, 0] / value
    assert torch.allclose(out, (value * factor)[:, None, None, None].expand_as(out), atol=1e-5)
    assert factor.min() >= 1 - strength - 1e-5 and factor.max() <= 1 + strength + 1e-5
    assert factor.min() < 1 - 0.8 * strength and factor.max() > 1 + 0.8 * strength


def test_colour_jitter_keeps_pixels_in_range_and_changes_contrast():
    x = torch.rand(100, 3, 8, 8)
    out = color_jitter(x, 1.0, _gen())
    assert out.min() >= 0 and out.max() <= 1
    spread = out.std((1, 2, 3)) / x.std((1, 2, 3))
    assert spread.min() < 0.7 and spread.max() > 1.2


# ------------------------------------------------------------------------- normalisation


def test_dataset_normalisation_gives_zero_mean_unit_std():
    spec = SyntheticConfig(train_size=600, test_size=50, channels=3, image_size=8)
    config = DataConfig(name="synthetic", normalize="dataset", synthetic=spec)
    splits = load_dataset(config)
    pipe = BatchPipeline(config, splits.mean, splits.std, 3)
    out = pipe(torch.from_numpy(splits.train_images), train=False)
    per_channel_mean = out.mean((0, 2, 3))
    per_channel_std = out.std((0, 2, 3))
    assert torch.allclose(per_channel_mean, torch.zeros(3), atol=1e-4)
    assert torch.allclose(per_channel_std, torch.ones(3), atol=1e-3)
    assert len(set(splits.mean)) == 3  # the statistics really are per channel


def test_unit_and_half_and_imagenet_normalisation():
    x = _images()
    unit = _pipeline(3, "unit")(x, train=False)
    torch.testing.assert_close(unit, x.float() / 255)
    assert unit.min() >= 0 and unit.max() <= 1
    half = _pipeline(3, "half")(x, train=False)
    torch.testing.assert_close(half, (x.float() / 255 - 0.5) / 0.5)
    assert half.min() >= -1 and half.max() <= 1
    imagenet = _pipeline(3, "imagenet")(x, train=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(imagenet, (x.float() / 255 - mean) / std)


def test_grey_is_repeated_to_three_channels_with_repeated_statistics():
    x = _images(4, 1)
    pipe = BatchPipeline(DataConfig(normalize="dataset", channels=3), (0.2,), (0.4,), 1)
    out = pipe(x, train=False)
    assert out.shape == (4, 3, 12, 12)
    expected = (x.float() / 255 - 0.2) / 0.4
    for c in range(3):
        torch.testing.assert_close(out[:, c : c + 1], expected)


def test_colour_cannot_be_squeezed_to_one_channel():
    with pytest.raises(ConfigError, match=r"data\.channels: can only repeat grey images to 3 channels"):
        BatchPipeline(DataConfig(channels=1), (0.5,) * 3, (0.5,) * 3, 3)


def test_resize_28_to_32():
    x = torch.full((3, 1, 28, 28), 200, dtype=torch.uint8)
    x[:, :, :, :14] = 0  # left half black, right half bright
    out = _pipeline(1, "unit", resize=32)(x, train=False)
    assert out.shape == (3, 1, 32, 32)
    assert torch.allclose(out[:, :, :, :15], torch.zeros(1)) and torch.allclose(
        out[:, :, :, 17:], torch.tensor(200 / 255)
    )
    expected = F.interpolate(x.float() / 255, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)


# --------------------------------------------------------------------------------- batches


def test_batch_indices_cover_each_item_once_and_drop_a_single_last_image():
    batches = list(batch_indices(10, 3, _gen(), "cpu", shuffle=True))
    assert [len(b) for b in batches] == [3, 3, 3]  # the lone 10th image would break batch norm
    assert len(torch.cat(batches).unique()) == 9
    batches = list(batch_indices(11, 3, _gen(), "cpu", shuffle=True))
    assert sorted(torch.cat(batches).tolist()) == list(range(11))
    ordered = list(batch_indices(10, 4, None, "cpu", shuffle=False))
    assert torch.cat(ordered).tolist() == list(range(10))  # evaluation keeps every image, in order
    assert torch.cat(batches).tolist() != list(range(11))  # training order is shuffled
    np.testing.assert_array_equal(
        torch.cat(list(batch_indices(11, 3, _gen(1), "cpu", True))).numpy(),
        torch.cat(list(batch_indices(11, 3, _gen(1), "cpu", True))).numpy(),
    )
