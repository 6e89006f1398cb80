"""Training loss of the predictor: ``-nss_w * NSS + kl_w * KL - cc_w * CC`` (defaults 1, 10, 2)."""

from __future__ import annotations

import torch

from .metrics import cc, kld, nss

# float32 training needs a larger epsilon than the metric's MATLAB default.
LOSS_EPS = 1e-7


def saliency_loss(
    prediction: torch.Tensor,
    density: torch.Tensor,
    fixations: torch.Tensor,
    nss_weight: float = 1.0,
    kl_weight: float = 10.0,
    cc_weight: float = 2.0,
) -> torch.Tensor:
    """Mean loss over a batch of ``(B, H, W)`` maps, computed on max-normalised predictions."""
    prediction = prediction / prediction.amax(dim=(-2, -1), keepdim=True).clamp_min(LOSS_EPS)
    loss = (
        -nss_weight * nss(prediction, fixations)
        + kl_weight * kld(prediction, density, eps=LOSS_EPS)
        - cc_weight * cc(prediction, density)
    )
    return loss.mean()
