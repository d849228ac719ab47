"""Learning-rate schedules: the rate of every optimiser step, from the training settings.

Linear warm-up over the first `warmup_epochs`, then constant, step decay or cosine decay over
the remaining epochs. Rates change per step, not per epoch, so a one-epoch warm-up is smooth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mnist_pipeline.nn.settings import TrainSettings


@dataclass(frozen=True)
class Schedule:
    base: float
    kind: str  # constant, step or cosine
    epochs: int
    steps_per_epoch: int
    warmup_epochs: int = 0
    step_epochs: int = 10
    step_gamma: float = 0.1

    def rate(self, step: int) -> float:
        """Learning rate of optimiser step `step` (0-based, counted over the whole run)."""
        warmup = self.warmup_epochs * self.steps_per_epoch
        if step < warmup:
            # Step 0 gets base / warmup steps, the last warm-up step the full base rate.
            return self.base * (step + 1) / warmup
        after = step - warmup
        if self.kind == "constant":
            return self.base
        if self.kind == "step":
            return self.base * self.step_gamma ** (after // (self.step_epochs * self.steps_per_epoch))
        total = (self.epochs - self.warmup_epochs) * self.steps_per_epoch
        return self.base * 0.5 * (1.0 + math.cos(math.pi * min(after, total) / total))


def make_schedule(settings: TrainSettings, steps_per_epoch: int) -> Schedule:
    return Schedule(
        base=settings.learning_rate,
        kind=settings.schedule,
        epochs=settings.epochs,
        steps_per_epoch=int(steps_per_epoch),
        warmup_epochs=settings.warmup_epochs,
        step_epochs=settings.step_epochs,
        step_gamma=settings.step_gamma,
    )
