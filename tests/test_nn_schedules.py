"""Learning-rate schedules, step by step."""

import math

import pytest

from mnist_pipeline.nn.schedules import Schedule, make_schedule
from mnist_pipeline.nn.settings import TrainSettings


def test_constant():
    s = Schedule(0.1, "constant", epochs=3, steps_per_epoch=10)
    assert {s.rate(step) for step in range(30)} == {0.1}


def test_warmup_rises_linearly_to_the_base_rate():
    s = Schedule(1.0, "constant", epochs=5, steps_per_epoch=4, warmup_epochs=2)
    assert [s.rate(step) for step in range(9)] == [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.0]


def test_step_decay_counts_epochs_after_warmup():
    s = Schedule(1.0, "step", epochs=10, steps_per_epoch=2, warmup_epochs=1, step_epochs=3, step_gamma=0.5)
    rates = [s.rate(step) for step in range(2, 20, 2)]  # first step of epochs 2..10
    assert rates == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25])


def test_cosine_falls_from_base_to_near_zero():
    s = Schedule(2.0, "cosine", epochs=4, steps_per_epoch=5)
    assert s.rate(0) == 2.0
    assert s.rate(10) == pytest.approx(1.0)
    assert s.rate(19) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 19 / 20)))


def test_make_schedule_takes_its_keys_from_the_settings():
    settings = TrainSettings(learning_rate=0.5, schedule="step", epochs=6, warmup_epochs=1, step_epochs=2, step_gamma=0.25)
    assert make_schedule(settings, 7) == Schedule(0.5, "step", epochs=6, steps_per_epoch=7, warmup_epochs=1, step_epochs=2,
                                                  step_gamma=0.25)
