"""What the FedAvg server and clients share: the model, the synthetic non-IID data, the environment.

The model is logistic regression (weights + bias in one vector). Every client draws its own data:
features centred somewhere else, a different class balance and a different amount, all labelled
by one hidden "true" model, so the federation learns something no client sees all of.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

FEATURES = 8
TRUE_SEED = 1234  # the hidden model every client's labels come from


@dataclass(frozen=True)
class Env:
    """The variables flops-bot gives federated Jobs (README, "What your workloads get")."""

    server_address: str  # FL_SERVER_ADDRESS: `<service>:<port>`
    rounds: int  # FL_ROUNDS
    num_clients: int  # FL_NUM_CLIENTS
    client_id: int | None  # FL_CLIENT_ID, 0..N-1 (clients only)
    port: int  # FL_PORT (the server listens here)

    @classmethod
    def read(cls) -> Env:
        address = os.environ["FL_SERVER_ADDRESS"]
        client = os.environ.get("FL_CLIENT_ID")
        return cls(server_address=address, rounds=int(os.environ["FL_ROUNDS"]),
                   num_clients=int(os.environ["FL_NUM_CLIENTS"]), client_id=int(client) if client else None,
                   port=int(os.environ.get("FL_PORT") or address.rsplit(":", 1)[1]))


def initial_weights(seed: int = 0) -> np.ndarray:
    """Where the global model starts: a seeded random guess (zeros would make round 1 trivial)."""
    return np.random.default_rng(seed).normal(size=FEATURES + 1)


def true_model() -> np.ndarray:
    return np.random.default_rng(TRUE_SEED).normal(size=FEATURES + 1)


def client_data(client_id: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Client `client_id`'s samples: its own feature shift, size and class balance (non-IID)."""
    rng = np.random.default_rng([client_id, 0 if split == "train" else 1])
    shift = np.random.default_rng([client_id, 7]).normal(scale=1.5, size=FEATURES)
    count = (120 + 80 * (client_id % 4)) if split == "train" else 200
    x = rng.normal(size=(count, FEATURES)) + shift
    w = true_model()
    logits = x @ w[:-1] + w[-1] + rng.normal(scale=0.5, size=count)
    return x, (logits > 0).astype(float)


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x @ w[:-1] + w[-1], -30, 30)))


def loss_and_accuracy(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    p = np.clip(predict(w, x), 1e-9, 1 - 1e-9)
    loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return loss, float(np.mean((p > 0.5) == (y > 0.5)))


def local_training(w: np.ndarray, x: np.ndarray, y: np.ndarray, *, steps: int = 5, lr: float = 0.1) -> np.ndarray:
    """A few full-batch gradient steps from the global weights (FedAvg's local update)."""
    w = w.copy()
    for _ in range(steps):
        error = predict(w, x) - y
        w[:-1] -= lr * (x.T @ error) / len(y)
        w[-1] -= lr * float(np.mean(error))
    return w


def federated_average(updates: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """FedAvg: the clients' weights averaged, each weighted by its number of samples."""
    total = sum(n for _, n in updates)
    return sum(w * (n / total) for w, n in updates)  # type: ignore[return-value]
