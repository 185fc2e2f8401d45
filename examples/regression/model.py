"""A small multi-layer perceptron in numpy: forward, backward, full-batch gradient descent.

Narrow and deep on purpose: that is where the choice of activation shows. With LeakyReLU every
unit keeps a gradient; with plain ReLU a unit whose input turns negative for every sample stops
learning for good ("dying ReLU"), and on some seeds the whole network collapses. Unit tests of
this file pass either way; only a real train + evaluate run tells them apart.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEAKY_SLOPE = 0.2


def activation(z: np.ndarray) -> np.ndarray:
    return np.where(z > 0, z, LEAKY_SLOPE * z)


def activation_grad(z: np.ndarray) -> np.ndarray:
    return np.where(z > 0, 1.0, LEAKY_SLOPE)


@dataclass
class MLP:
    weights: list[np.ndarray]
    biases: list[np.ndarray]

    @classmethod
    def create(cls, sizes: list[int], rng: np.random.Generator) -> MLP:
        """He initialisation, zero biases."""
        weights = [rng.normal(0.0, np.sqrt(2.0 / n_in), (n_in, n_out)) for n_in, n_out in zip(sizes, sizes[1:])]
        return cls(weights, [np.zeros(n_out) for n_out in sizes[1:]])

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """(layer inputs, pre-activations, class probabilities)."""
        inputs, pre = [x], []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = inputs[-1] @ w + b
            pre.append(z)
            inputs.append(activation(z) if i < len(self.weights) - 1 else z)
        logits = inputs[-1] - inputs[-1].max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return inputs, pre, probs / probs.sum(axis=1, keepdims=True)

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> None:
        """One full-batch gradient step on the cross-entropy loss."""
        inputs, pre, probs = self.forward(x)
        grad = probs.copy()
        grad[np.arange(len(y)), y] -= 1.0
        grad /= len(y)
        for i in reversed(range(len(self.weights))):
            grad_w, grad_b = inputs[i].T @ grad, grad.sum(axis=0)
            if i > 0:
                grad = (grad @ self.weights[i].T) * activation_grad(pre[i - 1])
            self.weights[i] -= lr * grad_w
            self.biases[i] -= lr * grad_b

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """(accuracy, mean cross-entropy)."""
        _, _, probs = self.forward(x)
        accuracy = float((probs.argmax(axis=1) == y).mean())
        loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
        return accuracy, loss


def spirals(per_class: int, classes: int, rng: np.random.Generator, noise: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved 2-D spirals, one per class: not linearly separable."""
    xs, ys = [], []
    for c in range(classes):
        radius = np.linspace(0.05, 1.0, per_class)
        theta = np.linspace(c * 4.0, (c + 1) * 4.0, per_class) + rng.normal(0.0, noise, per_class)
        xs.append(np.c_[radius * np.sin(theta), radius * np.cos(theta)])
        ys.append(np.full(per_class, c))
    return np.concatenate(xs), np.concatenate(ys)
