"""Models: every registered model trains a step; exact parameter counts; ImageNet weights; registry rules.

.venv/bin/python -m pytest tests/test_models.py -q
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from trainables.config import TrainConfig
from trainables.errors import ConfigError
from trainables.models import MODELS, count_parameters, create_model, resnet, resnet_s3
from trainables.registry import UnknownNameError

# A small sensible input per model, to stay quick on CPU: the residual CIFAR-style nets at 16×16 (no
# stem downsampling, so four stages still see 16, 8, 4, 2), MNIST-style nets at 28×28, S4's CNN and MLP
# at CIFAR's 32×32, ImageNet-style nets at 32 (their stride-32 stem and stages end at 1×1).
INPUTS = {
    "small_cnn": (1, 28),
    "mlp": (3, 32),
    "cnn_s4": (3, 32),
    "cifar_resnet18": (3, 16),
    "cifar_resnet34": (3, 16),
    "cifar_resnet50": (3, 16),
    "resnet_s3": (3, 16),
    "imagenet_resnet18": (3, 32),
    "imagenet_resnet50": (3, 32),
}


def _shipped_models() -> set[str]:
    """Registered models that ship with tunelab (test-only models such as fault_probe live in tests/)."""
    return {name for name in MODELS.names() if MODELS.get(name).__module__.startswith("trainables.")}


def test_every_registered_model_has_a_test_input():
    assert _shipped_models() == set(INPUTS), "add the new model to INPUTS so it is tested"


def _batch(name: str, batch: int = 4):
    channels, side = INPUTS[name]
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, channels, side, side, generator=gen), torch.arange(batch) % 3


def _loss(model, x, y):
    torch.manual_seed(0)  # the same dropout masks before and after training
    return F.cross_entropy(model(x), y)


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_model_builds_trains_and_has_finite_gradients(name):
    channels, side = INPUTS[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_channels=channels, input_size=side)
    x, y = _batch(name)
    out = model(x)
    assert out.shape == (4, 5) and torch.isfinite(out).all()
    F.cross_entropy(out, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = _loss(model, x, y).item()
    for _ in range(3):
        optimizer.zero_grad()
        _loss(model, x, y).backward()
        optimizer.step()
    with torch.no_grad():
        after = _loss(model, x, y).item()
    assert after < before, f"{name}: loss {before:.4f} → {after:.4f} on one memorisable batch"


# ------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("cifar_resnet18", {"in_channels": 1}, 11_172_810),  # study S2's count, to the parameter
        ("cifar_resnet18", {"in_channels": 3}, 11_173_962),
        ("resnet_s3", {"in_channels": 3}, 4_370_506),
        ("cifar_resnet50", {"in_channels": 3}, 23_520_842),
        # torchvision's ResNets without their 1000-class fc, plus a 10-class linear head
        ("imagenet_resnet18", {"in_channels": 3}, 11_689_512 - 513_000 + 5_130),
        ("imagenet_resnet50", {"in_channels": 3}, 25_557_032 - 2_049_000 + 20_490),
        ("mlp", {"in_channels": 3}, 3072 * 64 + 64 + 64 * 10 + 10),  # study S4's MLP
    ],
)
def test_exact_parameter_counts(name, options, expected):
    assert count_parameters(create_model(name, num_classes=10, input_size=32, **options)) == expected


def test_documented_counts_match_the_code():
    s3 = count_parameters(create_model("resnet_s3"))
    assert f"{s3:,}" in resnet_s3.__doc__ and "4,693,962" in resnet_s3.__doc__  # ours and the study's
    assert f"{count_parameters(create_model('cifar_resnet18', in_channels=1)):,}" in resnet.__doc__
    assert f"{count_parameters(create_model('cifar_resnet18', in_channels=3)):,}" in resnet.__doc__


def test_resnet_s3_widths_option():
    wide = create_model("resnet_s3", widths=[64, 128, 256, 256])
    assert count_parameters(wide) > 4_370_506
    assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"widths must be four positive integers, got \[64, 128\]"):
        create_model("resnet_s3", widths=[64, 128])


# ----------------------------------------------------------------------- ImageNet-style nets


def _weights_file(tmp_path, arch: str):
    import torchvision.models

    torch.manual_seed(1)
    reference = getattr(torchvision.models, arch)(weights=None)
    path = tmp_path / f"{arch}.pt"
    torch.save(reference.state_dict(), path)
    return reference, path


@pytest.mark.parametrize("name", ["imagenet_resnet18", "imagenet_resnet50"])
def test_imagenet_weights_from_a_local_state_dict(tmp_path, name):
    reference, path = _weights_file(tmp_path, name.removeprefix("imagenet_"))
    model = create_model(name, num_classes=10, in_channels=3, input_size=32, weights=str(path))
    loaded = model.backbone.state_dict()
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(loaded[key], value, msg=f"{key} differs from the weights file")


def test_imagenet_grey_stem_keeps_the_pretrained_response(tmp_path):
    reference, path = _weights_file(tmp_path, "resnet18")
    grey = create_model("imagenet_resnet18", num_classes=10, in_channels=1, input_size=32, weights=str(path))
    conv1 = grey.backbone.conv1
    assert conv1.weight.shape == (64, 1, 7, 7)
    # A grey image through the adapted stem gives what the RGB stem gives for that image repeated 3×.
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(conv1(image), reference.conv1(image.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grey.backbone.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert grey(image).shape == (2, 10)


def test_imagenet_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"weights file .*nope.pt does not exist"):
        create_model("imagenet_resnet18", weights=str(tmp_path / "nope.pt"))
    wrong = tmp_path / "cifar.pt"
    torch.save(create_model("cifar_resnet18").state_dict(), wrong)
    with pytest.raises(ValueError, match=r"weights file .*cifar.pt is not a torchvision resnet18 state dict"):
        create_model("imagenet_resnet18", weights=str(wrong))


@pytest.mark.parametrize(
    ("pool", "head", "side"), [("flatten", "dense", 64), ("max", "dense", 32), ("avg", "linear", 48)]
)
def test_imagenet_heads_and_pools(pool, head, side):
    model = create_model(
        "imagenet_resnet18", num_classes=7, input_size=side, pool=pool, head=head, dense1=32, dense2=16
    )
    model.eval()
    assert model(torch.randn(2, 3, side, side)).shape == (2, 7)


def test_imagenet_input_resize_upsamples_inside_the_model():
    model = create_model("imagenet_resnet18", num_classes=4, input_size=16, input_resize=64, pool="flatten")
    model.eval()
    assert model.head[-1].in_features == 512 * 2 * 2  # 64 → stem /4 → three stride-2 stages → 2×2
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)


# ------------------------------------------------------------------------------ the registry


def test_unknown_model_lists_the_closest_names():
    with pytest.raises(UnknownNameError, match=r"unknown model 'cifar_resnet19'; closest: cifar_resnet18") as err:
        create_model("cifar_resnet19")
    assert "registered: cifar_resnet18, cifar_resnet34" in str(err.value)
    with pytest.raises(ConfigError, match=r"p\.yaml: base\.model\.name: unknown model 'resnet18'; closest: .*resnet18"):
        TrainConfig.from_dict({"model": {"name": "resnet18"}}, source="p.yaml")


def test_unknown_or_mistyped_model_option_is_a_config_error():
    with pytest.raises(ConfigError, match=r"base\.model\.depthh: not an option of this model; options: width, depth"):
        TrainConfig.from_dict({"model": {"name": "mlp", "depthh": 2}}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"base\.model\.width: expected an integer, got 'wide'"):
        TrainConfig.from_dict({"model": {"name": "mlp", "width": "wide"}}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"base\.model\.num_classes: not an option"):
        TrainConfig.from_dict({"model": {"name": "mlp", "num_classes": 3}}, source="p.yaml")


def test_duplicate_registration_is_an_error():
    original = MODELS.get("mlp")
    with pytest.raises(ValueError, match=r"model 'mlp' is registered twice"):
        MODELS.register("mlp")(lambda **kwargs: None)
    assert MODELS.get("mlp") is original
