"""Saliency metrics, following the MIT/Tuebingen saliency benchmark definitions.

Conventions (those of the benchmark's reference MATLAB code):

* ``cc``, ``kld`` and ``sim`` compare a predicted map with a continuous fixation *density* map;
  ``nss``, ``auc_judd`` and ``auc_shuffled`` compare it with a *binary* map of fixated pixels.
* ``nss`` standardises the prediction with the sample standard deviation (``N - 1``, MATLAB ``std``).
* ``kld`` normalises both maps to sum 1 and computes ``sum(g * log(eps + g / (p + eps)))`` with
  ``eps`` = MATLAB ``eps`` (2.2e-16) by default; the training loss passes a larger epsilon.
* ``sim`` rescales both maps to [0, 1], then to sum 1, and sums the element-wise minimum.
* ``auc_judd`` uses every fixated pixel's saliency as a threshold (ties broken by an optional tiny
  jitter); ``auc_shuffled`` uses thresholds every 0.1 on the [0, 1]-rescaled prediction and negatives
  drawn from other images' fixations, averaged over ``n_splits`` random draws.

``cc``, ``kld``, ``nss`` and ``sim`` are written in torch so the training loss reuses them; they take
maps of shape ``(..., H, W)`` (numpy or torch) and reduce the last two dimensions.
"""

from __future__ import annotations

import numpy as np
import torch

MATLAB_EPS = float(np.finfo(np.float64).eps)


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(*x.shape[:-2], -1)


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: prediction shape {tuple(a.shape)} != target shape {tuple(b.shape)}")


def _check_nonconstant(std: torch.Tensor, name: str, what: str) -> None:
    if bool((std == 0).any()):
        raise ValueError(f"{name}: the {what} is constant, so the metric is undefined")


def _standardise(x: torch.Tensor, name: str, what: str) -> torch.Tensor:
    flat = _flat(x)
    std = flat.std(dim=-1, keepdim=True)  # unbiased (N - 1), as MATLAB's std
    _check_nonconstant(std, name, what)
    return (flat - flat.mean(dim=-1, keepdim=True)) / std


def cc(prediction: np.ndarray | torch.Tensor, density: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Pearson linear correlation between a prediction and a fixation density map."""
    p, g = _as_tensor(prediction), _as_tensor(density)
    _check_same_shape(p, g, "cc")
    p, g = _standardise(p, "cc", "prediction"), _standardise(g, "cc", "density map")
    # corr2 of the standardised (zero-mean) maps; the scale of the standardisation cancels.
    return (p * g).sum(-1) / torch.sqrt((p * p).sum(-1) * (g * g).sum(-1))


def kld(
    prediction: np.ndarray | torch.Tensor, density: np.ndarray | torch.Tensor, eps: float = MATLAB_EPS
) -> torch.Tensor:
    """KL divergence of the prediction from the fixation density map (both normalised to sum 1)."""
    p, g = _as_tensor(prediction), _as_tensor(density)
    _check_same_shape(p, g, "kld")
    p, g = _flat(p), _flat(g)
    if bool((p < 0).any()) or bool((g < 0).any()):
        raise ValueError("kld: maps must be non-negative")
    p_sum, g_sum = p.sum(-1, keepdim=True), g.sum(-1, keepdim=True)
    if bool((p_sum == 0).any()) or bool((g_sum == 0).any()):
        raise ValueError("kld: a map sums to zero, so it cannot be normalised to a distribution")
    p, g = p / p_sum, g / g_sum
    return (g * torch.log(eps + g / (p + eps))).sum(-1)


def nss(prediction: np.ndarray | torch.Tensor, fixations: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Normalised scanpath saliency: mean standardised prediction at the fixated pixels."""
    p, f = _as_tensor(prediction), _as_tensor(fixations)
    _check_same_shape(p, f, "nss")
    f = _flat(f).to(p.dtype)
    if bool((f.sum(-1) == 0).any()):
        raise ValueError("nss: a fixation map has no fixated pixel")
    z = _standardise(p, "nss", "prediction")
    mask = (f > 0).to(z.dtype)
    return (z * mask).sum(-1) / mask.sum(-1)


def sim(prediction: np.ndarray | torch.Tensor, density: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Similarity (histogram intersection) of the two maps after range and sum normalisation."""
    p, g = _as_tensor(prediction), _as_tensor(density)
    _check_same_shape(p, g, "sim")

    def to_distribution(x: torch.Tensor, what: str) -> torch.Tensor:
        x = _flat(x)
        lo, hi = x.min(-1, keepdim=True).values, x.max(-1, keepdim=True).values
        _check_nonconstant(hi - lo, "sim", what)
        x = (x - lo) / (hi - lo)
        return x / x.sum(-1, keepdim=True)

    return torch.minimum(to_distribution(p, "prediction"), to_distribution(g, "density map")).sum(-1)


def _rescale_01(x: np.ndarray, name: str) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        raise ValueError(f"{name}: the prediction is constant, so the metric is undefined")
    return (x - lo) / (hi - lo)


def _binary_2d(fixations: np.ndarray, prediction: np.ndarray, name: str) -> np.ndarray:
    fixations = np.asarray(fixations)
    if fixations.shape != prediction.shape or prediction.ndim != 2:
        raise ValueError(f"{name}: expects two 2-D maps of one shape, got {prediction.shape} and {fixations.shape}")
    fixated = fixations.reshape(-1) > 0
    if not fixated.any():
        raise ValueError(f"{name}: the fixation map has no fixated pixel")
    return fixated


def auc_judd(prediction: np.ndarray, fixations: np.ndarray, jitter: bool = True, seed: int = 0) -> float:
    """AUC-Judd: ROC area where every fixated pixel's saliency is a threshold.

    True-positive rate at threshold ``t``: fraction of fixated pixels with saliency >= ``t``;
    false-positive rate: fraction of the *other* pixels with saliency >= ``t``. With ``jitter`` a
    uniform noise below 1e-7 breaks ties (as in the reference code); pass ``jitter=False`` for exact
    hand-checkable values.
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    fixated = _binary_2d(fixations, prediction, "auc_judd")
    s = prediction.reshape(-1)
    if jitter:
        s = s + np.random.default_rng(seed).random(s.shape) / 1e7
    s = _rescale_01(s, "auc_judd")
    thresholds = np.sort(s[fixated])[::-1]
    n_fix, n_pix = thresholds.size, s.size
    if n_pix == n_fix:
        raise ValueError("auc_judd: every pixel is fixated, so there are no negatives")
    s_sorted = np.sort(s)
    above = n_pix - np.searchsorted(s_sorted, thresholds, side="left")  # pixels with s >= t
    tp = np.concatenate([[0.0], np.arange(1, n_fix + 1) / n_fix, [1.0]])
    fp = np.concatenate([[0.0], (above - np.arange(1, n_fix + 1)) / (n_pix - n_fix), [1.0]])
    return float(np.trapezoid(tp, fp))


def auc_shuffled(
    prediction: np.ndarray,
    fixations: np.ndarray,
    other_fixations: np.ndarray,
    n_splits: int = 100,
    step: float = 0.1,
    seed: int = 0,
) -> float:
    """Shuffled AUC: positives are this image's fixations, negatives are other images' fixations.

    ``other_fixations`` is a binary map (same shape) of fixations pooled from other images, which
    discounts centre bias. Each split draws as many negatives as there are fixations (fewer if the
    pool is smaller); thresholds run from the maximum down to 0 every ``step`` on the [0, 1]-rescaled
    prediction. Returns the mean area over ``n_splits`` draws.
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    fixated = _binary_2d(fixations, prediction, "auc_shuffled")
    other = _binary_2d(other_fixations, prediction, "auc_shuffled (other_fixations)")
    s = _rescale_01(prediction.reshape(-1), "auc_shuffled")
    positives = s[fixated]
    pool = np.flatnonzero(other)
    n_neg = min(positives.size, pool.size)
    rng = np.random.default_rng(seed)
    areas = []
    for _ in range(n_splits):
        negatives = s[rng.permutation(pool)[:n_neg]]
        top = max(positives.max(), negatives.max())
        n_steps = int(np.floor(top / step + 1e-9))
        thresholds = (np.arange(n_steps + 1) * step)[::-1]  # MATLAB: fliplr(0:step:top)
        tp = np.concatenate([[0.0], [(positives >= t).mean() for t in thresholds], [1.0]])
        fp = np.concatenate([[0.0], [(negatives >= t).mean() for t in thresholds], [1.0]])
        areas.append(np.trapezoid(tp, fp))
    return float(np.mean(areas))
