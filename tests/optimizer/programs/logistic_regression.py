"""Softmax regression on synthetic blobs, full-batch gradient descent with numpy, with evaluation."""
import time

import numpy as np


def run(duration_s=1.0, n=512, dims=24, classes=4, lr=0.5, seed=9):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dims)) * 3
    labels = rng.integers(0, classes, n)
    x = centers[labels] + rng.standard_normal((n, dims))
    onehot = np.eye(classes)[labels]
    w = np.zeros((dims, classes))
    deadline = time.monotonic() + duration_s
    epochs, accuracy = 0, 0.0
    while time.monotonic() < deadline:
        logits = x @ w
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        w -= lr * (x.T @ (probs - onehot)) / n
        if epochs % 10 == 0:
            accuracy = float((probs.argmax(axis=1) == labels).mean())
        epochs += 1
    return {"epochs": epochs, "accuracy": accuracy}
