"""Logistic regression by gradient descent, with the loss history kept to check convergence."""
from __future__ import annotations

import numpy as np


def synthetic(n: int = 400, seed: int = 0) -> tuple[list[dict[str, object]], np.ndarray]:
    """Customers whose churn depends on short tenure, high spend and many tickets."""
    rng = np.random.default_rng(seed)
    records = [{"tenure_months": int(rng.integers(1, 60)), "monthly_spend": float(rng.gamma(2.0, 20.0)),
                "tickets": int(rng.poisson(1.5)), "plan": str(rng.choice(["free", "pro", "team"]))}
               for _ in range(n)]
    score = np.array([-0.08 * float(r["tenure_months"]) + 0.03 * float(r["monthly_spend"])  # type: ignore[arg-type]
                      + 0.6 * float(r["tickets"]) for r in records])  # type: ignore[arg-type]
    labels = (score + rng.normal(0, 0.5, n) > np.median(score)).astype(float)
    return records, labels


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def train(x: np.ndarray, y: np.ndarray, *, epochs: int = 300, lr: float = 0.5) -> tuple[np.ndarray, list[float]]:
    """Weights (bias last) and the loss after each epoch."""
    xb = np.column_stack([x, np.ones(len(x))])
    w = np.zeros(xb.shape[1])
    losses = []
    for _ in range(epochs):
        p = sigmoid(xb @ w)
        losses.append(float(-np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))))
        w -= lr * xb.T @ (p - y) / len(y)
    return w, losses


def accuracy(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    p = sigmoid(np.column_stack([x, np.ones(len(x))]) @ w)
    return float(np.mean((p > 0.5) == (y > 0.5)))
