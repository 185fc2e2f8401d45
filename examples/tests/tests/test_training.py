"""Training: the loss goes down and settles, the model beats chance, and nothing becomes NaN."""
import numpy as np

from churn.features import extract
from churn.model import accuracy, synthetic, train


def test_training_converges() -> None:
    records, y = synthetic(seed=1)
    _, losses = train(extract(records), y)
    assert losses[-1] < 0.7 * losses[0]
    assert abs(losses[-1] - losses[-11]) < 1e-3  # settled: the last 10 epochs barely move it


def test_the_model_beats_chance_on_held_out_data() -> None:
    records, y = synthetic(n=600, seed=2)
    x = extract(records)
    w, _ = train(x[:400], y[:400])
    assert accuracy(w, x[400:], y[400:]) > 0.75


def test_no_nan_in_weights_or_loss_even_with_a_large_learning_rate() -> None:
    records, y = synthetic(seed=3)
    w, losses = train(extract(records), y, lr=50.0)
    assert not np.isnan(w).any() and not np.isnan(losses).any()
