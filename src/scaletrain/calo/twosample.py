"""Two-sample statistics: normalized Wasserstein distances, Fréchet distance, classifier AUC."""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg, stats


def wasserstein_normalized(gen: np.ndarray, ref: np.ndarray) -> float:
    """1-D Wasserstein distance divided by the reference's standard deviation.

    Dividing by the spread makes distances of observables with different units comparable:
    a pure shift of the mean by one reference sigma gives 1. NaNs (moments of empty showers)
    are left out.
    """
    g, r = gen[np.isfinite(gen)], ref[np.isfinite(ref)]
    if len(g) == 0 or len(r) == 0:
        return float("nan")
    scale = float(np.std(r))
    if scale <= 0:
        scale = max(abs(float(np.mean(r))), 1.0)
    return float(stats.wasserstein_distance(g, r) / scale)


def wasserstein_hist(gen_counts: np.ndarray, ref_counts: np.ndarray, centres: np.ndarray) -> float:
    """Normalized Wasserstein distance of two histograms on the same (uniform) bins."""
    gs, rs = gen_counts.sum(), ref_counts.sum()
    if gs <= 0 or rs <= 0:
        return float("nan")
    pg, pr = gen_counts / gs, ref_counts / rs
    width = float(centres[1] - centres[0])
    dist = float(np.abs(np.cumsum(pg) - np.cumsum(pr)).sum() * width)
    mean = float(pr @ centres)
    std = float(np.sqrt(max(pr @ (centres - mean) ** 2, 0.0)))
    return dist / (std if std > 0 else 1.0)


def standardize(gen: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features scaled by the reference's mean and std; NaNs set to the reference mean (0)."""
    mu = np.nanmean(ref, axis=0)
    sd = np.nanstd(ref, axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    out = []
    for x in (gen, ref):
        z = (x - mu) / sd
        out.append(np.where(np.isfinite(z), z, 0.0))
    return out[0], out[1]


def frechet_distance(gen: np.ndarray, ref: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (already standardized) feature sets."""
    if len(gen) < 2 or len(ref) < 2:
        return float("nan")
    mu_g, mu_r = gen.mean(axis=0), ref.mean(axis=0)
    cov_g = np.atleast_2d(np.cov(gen, rowvar=False))
    cov_r = np.atleast_2d(np.cov(ref, rowvar=False))
    covmean = linalg.sqrtm(cov_g @ cov_r)
    # sqrtm of a product of covariances is real up to round-off
    covmean = np.real(covmean)
    fd = float(((mu_g - mu_r) ** 2).sum() + np.trace(cov_g + cov_r - 2.0 * covmean))
    return max(fd, 0.0)


def auc(scores_gen: np.ndarray, scores_ref: np.ndarray) -> float:
    """ROC AUC from the Mann-Whitney U statistic: P(score of a generated > score of a ref)."""
    n1, n2 = len(scores_gen), len(scores_ref)
    if n1 == 0 or n2 == 0:
        return float("nan")
    ranks = stats.rankdata(np.concatenate([scores_gen, scores_ref]))
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n2))


def classifier_scores(
    gen: np.ndarray,
    ref: np.ndarray,
    *,
    seed: int = 0,
    epochs: int = 30,
    hidden: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold classifier scores for every generated and reference shower.

    Two folds: a small MLP is trained on one half of both samples and scores the other half,
    then the halves swap. Every shower is scored by a model that never saw it, so the AUC of
    these scores is a held-out AUC over all showers (0.5 when the samples are
    indistinguishable) and can be restricted to any subset, e.g. an energy bin.
    """
    rng = np.random.default_rng(seed)
    fold_g = rng.permutation(len(gen)) % 2
    fold_r = rng.permutation(len(ref)) % 2
    out_g = np.empty(len(gen))
    out_r = np.empty(len(ref))
    for k in (0, 1):
        tr_x = np.concatenate([gen[fold_g != k], ref[fold_r != k]])
        tr_y = np.concatenate([np.ones((fold_g != k).sum()), np.zeros((fold_r != k).sum())])
        model = _train_mlp(tr_x, tr_y, seed=seed + k, epochs=epochs, hidden=hidden)
        out_g[fold_g == k] = _predict(model, gen[fold_g == k])
        out_r[fold_r == k] = _predict(model, ref[fold_r == k])
    return out_g, out_r


def _train_mlp(x: np.ndarray, y: np.ndarray, *, seed: int, epochs: int, hidden: int):
    threads = torch.get_num_threads()
    # a model this small runs fastest on one thread: more only add synchronization
    torch.set_num_threads(1)
    try:
        return _fit(x, y, seed=seed, epochs=epochs, hidden=hidden)
    finally:
        torch.set_num_threads(threads)


def _fit(x: np.ndarray, y: np.ndarray, *, seed: int, epochs: int, hidden: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)
        model = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, 1),
        )
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        # balance the classes so that unequal sample sizes do not shift the scores
        pos = float(yt.mean())
        weight = torch.where(yt > 0, 0.5 / max(pos, 1e-9), 0.5 / max(1 - pos, 1e-9))
        batch = 256
        for _ in range(epochs):
            perm = torch.randperm(len(xt))
            for i in range(0, len(xt), batch):
                idx = perm[i : i + batch]
                logits = model(xt[idx]).squeeze(1)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, yt[idx], weight=weight[idx]
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
    return model


def _predict(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=torch.float32)).squeeze(1).numpy().astype(np.float64)
