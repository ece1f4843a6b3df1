"""A plain numpy mini-batch training loop: linear regression with momentum SGD over shuffled
mini-batches of an in-memory dataset, with a validation pass every epoch.

Its arrays are numpy's own data buffers (the C library's malloc on numpy <= 2.4, the RAW domain on
numpy 2.5), with none of the ufunc buffers or Python-level scaffolding that put large blocks in the
other domains: without the native domain it is nearly invisible, the case the recognizer must get
right once the native domain sees it."""
import time

import numpy as np


def run(duration_s=1.0, n=4096, dims=32, batch=128, lr=0.01, momentum=0.9, seed=5):
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(dims)
    x = rng.standard_normal((n, dims))
    y = x @ w_true + 0.1 * rng.standard_normal(n)
    train, valid = np.arange(n - 1024), np.arange(n - 1024, n)
    w = np.zeros(dims)
    velocity = np.zeros(dims)
    deadline = time.monotonic() + duration_s
    epochs, loss = 0, float("nan")
    while time.monotonic() < deadline:
        order = rng.permutation(train)
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            xb, yb = x[idx], y[idx]
            err = xb @ w - yb
            grad = xb.T @ err / len(idx)
            velocity = momentum * velocity - lr * grad
            w = w + velocity
            if time.monotonic() >= deadline:
                break
        loss = float(np.mean((x[valid] @ w - y[valid]) ** 2))
        epochs += 1
    return {"epochs": epochs, "loss": loss}
