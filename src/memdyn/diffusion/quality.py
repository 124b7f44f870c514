"""A sample-quality proxy without pretrained networks: how confidently a small classifier, trained
on real digits, recognises a sample.

Pixel distances favour blurry averages (an average digit is close to every digit), so they cannot
tell when samples start to look real. A classifier's confidence can: a blurry mixture of digits is
classified with low confidence, a sharp digit (new or memorized) with high confidence. The mean
top-class probability of a set of samples, relative to that of real digits, is the proxy
(in the spirit of the Inception score, with a classifier small enough to train in a second).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .models import seeded

__all__ = ["DigitClassifier", "fit_classifier"]


class DigitClassifier(nn.Module):
    """A two-layer MLP classifier on flattened images."""

    def __init__(self, dim: int, classes: int, width: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1))

    @torch.no_grad()
    def confidence(self, x: torch.Tensor) -> np.ndarray:
        """Top-class probability of each item."""
        return torch.softmax(self(x.float()), dim=1).amax(1).double().numpy()


def fit_classifier(images: torch.Tensor, labels, *, steps: int = 400, batch: int = 256, lr: float = 2e-3,
                   seed: int = 0) -> DigitClassifier:
    """Train a :class:`DigitClassifier` on labelled images (Adam, cross-entropy), deterministic
    given ``seed``; the global generator is untouched."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if images.shape[0] != y.shape[0] or images.shape[0] < 2:
        raise ValueError(f"need matching images and labels (>= 2), got {images.shape[0]} and {y.shape[0]}")
    gen = torch.Generator().manual_seed(int(seed))
    model = seeded(lambda: DigitClassifier(math.prod(images.shape[1:]), int(y.max()) + 1), seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    X = images.float()
    for _ in range(int(steps)):
        idx = torch.randint(0, X.shape[0], (batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
