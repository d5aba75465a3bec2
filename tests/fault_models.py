"""A test-only model that misbehaves on request, and the trainable that makes Ray workers know it.

    from tests.fault_models import train_trial_with_fault_models   # registers "fault_probe"
    monkeypatch.setattr(trainables.adapter, "train_trial", train_trial_with_fault_models)

Ray runs trials in separate worker processes, so a monkeypatch in the test process
never reaches them. ``tune.py`` ships the trainable to the workers by reference;
when it is ``train_trial_with_fault_models``, each worker imports this module,
which registers ``fault_probe`` in its model registry before the trial builds it.

``fault_probe`` is ``small_cnn`` whose training forward pass, after
``fault_after_batches`` batches, does one of:

- ``oom``: raises ``torch.OutOfMemoryError`` (what CUDA raises when memory runs out);
- ``nan``: returns NaN logits, so the loss is not finite;
- ``crash_once``: raises ``RuntimeError`` the first time only (a marker file in
  ``marker_dir`` remembers it), like a worker lost in the middle of an epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables import adapter
from trainables.models import MODELS
from trainables.models.cnn import small_cnn

FAULTS = ("none", "oom", "nan", "crash_once")
_train_trial = adapter.train_trial  # the real one, whatever a test patches later


class FaultProbe(nn.Module):
    def __init__(self, net: nn.Module, fault: str, fault_after_batches: int, marker: Path | None) -> None:
        super().__init__()
        self.net = net
        self.fault = fault
        self.fault_after_batches = fault_after_batches
        self.marker = marker
        self.batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if not self.training:
            return out
        self.batches += 1
        if self.batches <= self.fault_after_batches or self.fault == "none":
            return out
        if self.fault == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        if self.fault == "nan":
            return out * float("nan")
        if self.fault == "crash_once" and self.marker is not None and not self.marker.exists():
            self.marker.write_text("crashed once")
            raise RuntimeError("simulated crash in the middle of an epoch")
        return out


if "fault_probe" not in MODELS:  # the test process may import this module under two names

    @MODELS.register("fault_probe")
    def fault_probe(
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 8,
        fault: str = "none",
        fault_after_batches: int = 0,
        marker_dir: str = "",
    ) -> nn.Module:
        """``small_cnn`` (width 8) that fails in a chosen way after a number of training batches."""
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        marker = Path(marker_dir) / "crashed" if marker_dir else None
        net = small_cnn(num_classes, in_channels, input_size, width=8, dense_width=32, dropout=0.0)
        return FaultProbe(net, fault, fault_after_batches, marker)


def train_trial_with_fault_models(config: dict[str, Any], **kwargs: Any) -> None:
    """``trainables.adapter.train_trial``, from a module whose import registers ``fault_probe``."""
    _train_trial(config, **kwargs)
