"""A classifier two-sample test of realism: can a classifier tell a method's outputs from real photos?

The Fréchet distance ranks methods but its value drifts with the sample size (its real-vs-real
floor falls like 1/n); the held-out ROC AUC of a classifier has a fixed meaning: 0.5 = it cannot
tell the outputs from real photos, 1.0 = it always can (Lopez-Paz & Oquab, ICLR 2017).

Real photos of one half of the test identities face a method's outputs for the other half's
photos, so the classifier cannot win by recognising a person; standardised logistic regression
on the same features as the FD (both sides through the same network and code path), 5 folds
grouped by identity, AUC mean and sd over the folds. Plain numpy/torch: the air-gapped GPU
machine has no scikit-learn.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

FOLDS = 5
L2 = 1e-2  # ridge on the standardised weights: 256 features against a few hundred photos a side


def identity_halves(identities: np.ndarray) -> np.ndarray:
    """True for the identities on the "real" side: a fixed hash, so every method and every run
    splits the same way."""
    return np.array([hashlib.sha256(f"c2st:{i}".encode()).digest()[0] % 2 == 0 for i in identities])


def _folds(groups: np.ndarray, folds: int) -> np.ndarray:
    """A fold number per sample; all samples of a group share one (hash of the group)."""
    return np.array([int.from_bytes(hashlib.sha256(f"fold:{g}".encode()).digest()[:4], "big") % folds for g in groups])


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(a positive outscores a negative), ties counting half (Mann-Whitney U)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    positives = labels.astype(bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _logistic_regression(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """Fit on standardised features (the training fold's mean and sd); returns (mean, sd, w, b)."""
    mean, sd = x.mean(0), x.std(0) + 1e-6
    features = torch.from_numpy((x - mean) / sd).double()
    labels = torch.from_numpy(y).double()
    w = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ w + b, labels) + L2 * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return mean, sd, w.detach(), b.detach()


def two_sample_auc(
    real: np.ndarray,
    real_groups: np.ndarray,
    other: np.ndarray,
    other_groups: np.ndarray,
    folds: int = FOLDS,
    seed: int = 0,
) -> dict:
    """Held-out AUC of telling `other` (label 1) from `real` (label 0), folds grouped by identity.
    The larger side is subsampled so that both have n samples."""
    rng = np.random.default_rng(seed)
    n = min(len(real), len(other))
    if n < 2 * folds:
        raise ValueError(
            f"the two-sample test needs at least {2 * folds} samples a side, got {len(real)} and {len(other)}"
        )
    pick = lambda count: np.sort(rng.choice(count, n, replace=False))  # noqa: E731
    r, o = pick(len(real)), pick(len(other))
    x = np.concatenate([real[r], other[o]]).astype(np.float64)
    y = np.concatenate([np.zeros(n), np.ones(n)])
    fold = _folds(np.concatenate([np.asarray(real_groups)[r], np.asarray(other_groups)[o]]), folds)
    aucs = []
    for k in range(folds):
        train, held = fold != k, fold == k
        if len(np.unique(y[held])) < 2 or len(np.unique(y[train])) < 2:
            continue  # a fold with one side only has no AUC
        mean, sd, w, b = _logistic_regression(x[train], y[train])
        scores = (torch.from_numpy((x[held] - mean) / sd) @ w + b).numpy()
        aucs.append(roc_auc(scores, y[held]))
    return {"auc": float(np.mean(aucs)), "auc_sd": float(np.std(aucs)), "n_per_side": int(n), "folds": len(aucs)}
