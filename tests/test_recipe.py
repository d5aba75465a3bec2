"""Recipes: optimizers, weight decay, LR schedules, label smoothing, clipping, seeding, checkpoints, divergence.

.venv/bin/python -m pytest tests/test_recipe.py -q
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tests.conftest import ROOT
from trainables.config import (
    AugmentConfig,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    SyntheticConfig,
    TrainConfig,
)
from trainables.data import load_dataset
from trainables.loop import DivergedError, train_epoch
from trainables.optim import OPTIMIZERS, SCHEDULES, create_optimizer, create_schedule
from trainables.pipeline import BatchPipeline
from trainables.recipe import CHECKPOINT_FILE, CheckpointError, TrialRun

TIMING_KEYS = ("time/epoch_s", "throughput/img_s")

DATA = DataConfig(
    name="synthetic",
    val_fraction=0.2,
    augment=AugmentConfig(crop_padding=1, flip=True),
    synthetic=SyntheticConfig(train_size=240, test_size=40, channels=1, image_size=8, num_classes=4),
)


@pytest.fixture(scope="module")
def splits():
    return load_dataset(DATA).without_test()


def _config(**changes) -> TrainConfig:
    base = TrainConfig(
        data=DATA,
        model=ModelConfig("small_cnn", {"width": 4, "dense_width": 16, "dropout": 0.2}),
        optimizer=OptimizerConfig(name="adamw", lr=0.01, weight_decay=0.01),
        schedule=ScheduleConfig(name="cosine", warmup_epochs=1),
        epochs=3,
        batch_size=32,
        seed=3,
    )
    return replace(base, **changes)


def _without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


# ----------------------------------------------------------------------------- optimizers


def test_optimizer_registry_and_settings():
    assert OPTIMIZERS.names() == ["adam", "adamw", "sgd"]
    model = nn.Linear(3, 2)
    sgd = create_optimizer(model, OptimizerConfig(name="sgd", lr=0.2, momentum=0.8, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.8 and sgd.param_groups[0]["nesterov"] is True
    plain = create_optimizer(model, OptimizerConfig(name="sgd", momentum=0.0, nesterov=True))
    assert plain.param_groups[0]["nesterov"] is False  # torch refuses Nesterov without momentum
    adam = create_optimizer(model, OptimizerConfig(name="adam", lr=0.003, beta1=0.8, beta2=0.99))
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["betas"] == (0.8, 0.99)
    assert type(create_optimizer(model, OptimizerConfig(name="adamw"))) is torch.optim.AdamW


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_shrinks_weights_but_not_biases(name):
    model = nn.Linear(4, 3)
    weight, bias = model.weight.detach().clone(), model.bias.detach().clone()
    optimizer = create_optimizer(model, OptimizerConfig(name=name, lr=0.1, weight_decay=0.05))
    (model(torch.zeros(1, 4)) * 0).sum().backward()  # zero gradient: only the decay moves anything
    optimizer.step()
    torch.testing.assert_close(model.weight.detach(), weight * (1 - 0.1 * 0.05))
    torch.testing.assert_close(model.bias.detach(), bias)


def test_adam_weight_decay_is_an_l2_gradient():
    model = nn.Linear(4, 3)
    weight = model.weight.detach().clone()
    optimizer = create_optimizer(model, OptimizerConfig(name="adam", lr=0.01, weight_decay=0.1))
    (model(torch.zeros(1, 4)) * 0).sum().backward()
    optimizer.step()
    # Adam's first step moves each parameter by lr against the sign of its gradient, here 0.1·w.
    torch.testing.assert_close(model.weight.detach(), weight - 0.01 * weight.sign(), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------- schedules


def _lr_curve(schedule: ScheduleConfig, epochs: int = 10, steps: int = 10, lr: float = 1.0) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = create_schedule(optimizer, schedule, epochs, steps)
    curve = []
    for _ in range(epochs * steps):
        curve.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    return curve


def test_schedule_registry():
    assert SCHEDULES.names() == ["cosine", "cosine_restarts", "none", "onecycle", "step"]


def test_constant_and_step_schedules():
    assert _lr_curve(ScheduleConfig(name="none")) == [1.0] * 100
    step = _lr_curve(ScheduleConfig(name="step", step_epochs=3, gamma=0.5))
    assert [step[e * 10] for e in range(10)] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125])
    assert step[29] == 1.0 and step[30] == 0.5  # the drop happens at the epoch boundary


def test_cosine_decays_from_lr_to_its_floor():
    curve = _lr_curve(ScheduleConfig(name="cosine", min_lr_ratio=0.1))
    assert curve[0] == 1.0
    assert all(a >= b for a, b in zip(curve, curve[1:]))
    assert curve[50] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-9)  # half-way is half-way between lr and floor
    assert curve[-1] == pytest.approx(0.1, abs=0.01)


def test_linear_warmup_then_cosine():
    curve = _lr_curve(ScheduleConfig(name="cosine", warmup_epochs=2))
    ramp = curve[:20]
    assert ramp == pytest.approx([(k + 1) / 20 for k in range(20)])  # linear from ~0 to lr in 2 epochs
    assert curve[19] == pytest.approx(1.0) and max(curve) == pytest.approx(1.0)
    decay = curve[19:]
    assert all(a >= b for a, b in zip(decay, decay[1:])) and decay[-1] < 0.01
    assert curve[60] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))  # cosine over the 8 epochs after


@pytest.mark.parametrize("name", ["step", "cosine_restarts", "onecycle", "none"])
def test_warmup_composes_with_every_schedule(name):
    curve = _lr_curve(ScheduleConfig(name=name, warmup_epochs=1, step_epochs=5, restart_epochs=5))
    assert curve[0] < 0.15 and all(a < b for a, b in zip(curve[:10], curve[1:10]))


def test_cosine_restarts_jump_back_every_period():
    curve = _lr_curve(ScheduleConfig(name="cosine_restarts", restart_epochs=4, min_lr_ratio=0.2))
    assert curve[0] == curve[40] == curve[80] == 1.0
    assert curve[39] < 0.25 and curve[79] < 0.25
    assert curve[20] == pytest.approx(0.6)  # mid-period: half-way between lr and the floor
    assert curve[:40] == pytest.approx(curve[40:80])


def test_onecycle_rises_to_its_peak_at_30_percent_then_anneals():
    curve = _lr_curve(ScheduleConfig(name="onecycle"))
    assert curve[0] == pytest.approx(1 / 25)
    assert max(range(100), key=curve.__getitem__) == 30 and curve[30] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(curve[:30], curve[1:31]))
    assert all(a >= b for a, b in zip(curve[30:], curve[31:]))
    assert curve[-1] < 1e-3


# ------------------------------------------------------------- label smoothing and clipping


class _FixedLogits(nn.Module):
    """Predicts the same logits for every image, so the loss is known in closed form."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def _tiny_batch(n: int = 8):
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    return images, labels, BatchPipeline(DataConfig(normalize="unit"), (0.0,), (1.0,), 1)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_label_smoothing_reaches_the_loss(smoothing):
    images, labels, pipe = _tiny_batch()
    model = _FixedLogits([2.0, 0.0, -1.0])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-12)
    stats = train_epoch(model, pipe, images, labels, optimizer, None, batch_size=8, label_smoothing=smoothing)
    log_p = torch.log_softmax(torch.tensor([2.0, 0.0, -1.0]), 0)
    targets = torch.nn.functional.one_hot(labels, 3).float() * (1 - smoothing) + smoothing / 3
    expected = float(-(targets * log_p).sum(1).mean())
    assert stats.loss == pytest.approx(expected, rel=1e-6)
    assert stats.images == 8 and stats.acc == pytest.approx(3 / 8)


def test_gradient_clipping_bounds_the_step():
    images, labels, pipe = _tiny_batch()
    moves = {}
    for clip in (None, 0.01):
        model = _FixedLogits([5.0, 0.0, -5.0])
        start = model.logits.detach().clone()
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        train_epoch(model, pipe, images, labels, optimizer, None, batch_size=8, grad_clip_norm=clip)
        moves[clip] = float((model.logits.detach() - start).norm())
    assert moves[0.01] == pytest.approx(0.01, rel=1e-4)  # one SGD step of lr 1 with a gradient of norm 0.01
    assert moves[None] > 0.5


# ------------------------------------------------------------------ trial runs: repeatability


def _train(config: TrainConfig, splits, epochs: int) -> list[dict]:
    run = TrialRun(config, splits, device="cpu")
    return [_without_timing(run.run_epoch()) for _ in range(epochs)]


def test_seeded_cpu_runs_are_identical(splits):
    first = _train(_config(), splits, 2)
    assert first == _train(_config(), splits, 2)
    assert first[0]["train/loss"] != _train(_config(seed=4), splits, 1)[0]["train/loss"]
    expected_keys = {
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "lr",
        "epoch",
        "model/params",
        "model/flops",
        "status",
    }
    assert set(first[0]) == expected_keys and first[1]["epoch"] == 2 and first[0]["status"] == "running"


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_checkpoint_resume_continues_exactly(splits, tmp_path, optimizer):
    config = _config(optimizer=OptimizerConfig(name=optimizer, lr=0.05, nesterov=True, weight_decay=1e-3))
    uninterrupted = TrialRun(config, splits, device="cpu")
    uninterrupted.run_epoch()
    uninterrupted.save(tmp_path)
    expected = _without_timing(uninterrupted.run_epoch())

    resumed = TrialRun(config, splits, device="cpu")
    resumed.load(tmp_path)
    assert resumed.epoch == 1
    assert _without_timing(resumed.run_epoch()) == expected
    for a, b in zip(uninterrupted.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_weights_only_restore_reproduces_the_evaluation(splits, tmp_path):
    run = TrialRun(_config(), splits, device="cpu")
    run.run_epoch()
    run.save(tmp_path)
    fresh = TrialRun(_config(), splits, device="cpu")
    fresh.load(tmp_path, weights_only=True)
    images, labels = splits.val_images, splits.val_labels
    assert fresh.evaluate_images(images, labels) == run.evaluate_images(images, labels)


def test_checkpoint_from_another_model_is_refused(splits, tmp_path):
    TrialRun(_config(), splits, device="cpu").save(tmp_path)
    other = TrialRun(_config(model=ModelConfig("mlp", {"width": 8})), splits, device="cpu")
    with pytest.raises(
        CheckpointError, match=r"written by model 'small_cnn' with \d+ parameters, but this trial builds 'mlp'"
    ):
        other.load(tmp_path)
    wider = TrialRun(_config(model=ModelConfig("small_cnn", {"width": 8, "dense_width": 16})), splits, device="cpu")
    with pytest.raises(CheckpointError, match=r"resume it with the config it was trained with"):
        wider.load(tmp_path)


def test_corrupt_or_foreign_checkpoint_is_refused(splits, tmp_path):
    run = TrialRun(_config(), splits, device="cpu")
    path = run.save(tmp_path)
    assert path == tmp_path / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=rf"{path}: checkpoint is corrupt or unreadable"):
        run.load(tmp_path)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=r"checkpoint is corrupt or unreadable"):
        run.load(tmp_path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"not a tunelab trial checkpoint"):
        run.load(tmp_path)
    path.unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint file is missing"):
        run.load(tmp_path)


def test_huge_learning_rate_raises_diverged(splits):
    config = _config(
        model=ModelConfig("small_cnn", {"width": 8}),
        optimizer=OptimizerConfig(name="sgd", lr=10.0, momentum=0.9),
        schedule=ScheduleConfig(),
        data=replace(DATA, augment=AugmentConfig()),
    )
    run = TrialRun(config, splits, device="cpu")
    with pytest.raises(DivergedError, match=r"training loss (is not finite|exploded to)"):
        for _ in range(3):
            run.run_epoch()
    assert run.epoch < 3


def test_divergence_is_caught_mid_epoch():
    images = torch.randint(0, 255, (200, 1, 4, 4), dtype=torch.uint8)
    labels = torch.arange(200) % 2
    pipe = BatchPipeline(DataConfig(normalize="unit"), (0.0,), (1.0,), 1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e30)
    with pytest.raises(DivergedError, match=r"(is not finite|exploded to \S+) after 5 steps"):
        train_epoch(model, pipe, images, labels, optimizer, None, batch_size=2, check_every=5)


def test_exploded_but_finite_loss_counts_as_diverged():
    images, labels, pipe = _tiny_batch(6)
    labels = torch.zeros(6, dtype=torch.long)
    model = _FixedLogits([0.0, 2e4, 0.0])  # confidently wrong by 20,000 nats
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-12)
    with pytest.raises(
        DivergedError, match=r"training loss exploded to 2e\+04 at the end of the epoch \(limit 10000\)"
    ):
        train_epoch(model, pipe, images, labels, optimizer, None, batch_size=6)


# ------------------------------------------------------------------------- purity (no Ray)


def test_training_code_imports_no_ray():
    modules = [
        "trainables.config",
        "trainables.data",
        "trainables.models",
        "trainables.pipeline",
        "trainables.loop",
        "trainables.optim",
        "trainables.recipe",
    ]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "from trainables.data import load_dataset\n"
        + "from trainables.config import DataConfig\n"
        + "load_dataset(DataConfig(name='digits'))\n"
        + "leaked = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        + "print('RAY:' + ','.join(leaked))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "RAY:\n" in result.stdout, f"Ray was imported: {result.stdout}"


def test_losses_are_cross_entropy_of_the_model():
    # train_epoch's reported loss is the mean cross-entropy of the batches it trained on.
    images, labels, pipe = _tiny_batch(6)
    model = _FixedLogits([0.0, 1.0, 0.0])
    stats = train_epoch(model, pipe, images, labels, torch.optim.SGD(model.parameters(), lr=1e-12), None, batch_size=3)
    assert stats.loss == pytest.approx(F.cross_entropy(model(images), labels).item(), rel=1e-6)
