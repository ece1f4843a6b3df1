"""A numpy training loop: a two-layer network trained by mini-batch SGD on a synthetic task."""
import time

import numpy as np


def _batches(rng, n_features, batch):
    w_true = rng.standard_normal((n_features, 1))
    while True:
        x = rng.standard_normal((batch, n_features))
        y = (x @ w_true > 0).astype(np.float64)
        yield x, y


def run(duration_s=1.0, n_features=32, hidden=64, batch=64, lr=0.05, seed=3):
    """Trains until ``duration_s`` has passed; returns steps and the last loss.

    The default shapes stay under OpenBLAS's threading threshold: on a small shared machine its
    spinning worker threads would otherwise dominate the run."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((n_features, hidden)) * 0.1
    b1 = np.zeros(hidden)
    w2 = rng.standard_normal((hidden, 1)) * 0.1
    b2 = np.zeros(1)
    data = _batches(rng, n_features, batch)
    deadline = time.monotonic() + duration_s
    steps, loss = 0, float("nan")
    while time.monotonic() < deadline:
        x, y = next(data)
        h = np.maximum(x @ w1 + b1, 0.0)
        p = 1.0 / (1.0 + np.exp(-(h @ w2 + b2)))
        loss = float(-np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9)))
        grad_out = (p - y) / batch
        grad_w2 = h.T @ grad_out
        grad_h = (grad_out @ w2.T) * (h > 0)
        grad_w1 = x.T @ grad_h
        w2 -= lr * grad_w2
        b2 -= lr * grad_out.sum(axis=0)
        w1 -= lr * grad_w1
        b1 -= lr * grad_h.sum(axis=0)
        steps += 1
    return {"steps": steps, "loss": loss}


if __name__ == "__main__":
    print(run(2.0))
