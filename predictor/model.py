"""The explainable saliency predictor: contextual prioritisation over semantic proposals.

Stride-8 backbone features pass a 3x3 conv adapter. Each proposal mask, resized to the feature grid,
is refined by a small conv stack ending in a sigmoid and pools one prototype from the features. A
prioritisation head (1x1 conv + global average pooling over the masked features) scores the
prototypes; the top ``k`` are kept and softmax-weighted, and their prototypes, painted back through
their refined masks, are combined. A 1x1 conv + sigmoid decoder on [features, combination] gives the
saliency map, upsampled to the input. Every output says which proposals were kept and with what
weight, so a map comes with the reasons of its selected objects.

With ``use_proposal_scores`` (an addition to the published model) each proposal's exported score
enters the head as a constant plane and rides along its prototype as one more channel, so the
tuned VLM's own ranking of its phrases can inform the prioritisation.

With ``logit_lens`` (also an addition; after LogitGaze) the tuned VLM's logit-lens patch features enter as extra
channels: ``topk`` maps (the image's top-k lens probabilities per layer) join the backbone features before the
adapter; ``phrases`` maps (per proposal, the lens probability of its phrase per layer) join the features that
proposal's mask refines and pools, so they ride along its prototype into the head and the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import DilatedResNet, load_backbone_weights
from .config import PredictorModelConfig


@dataclass
class PredictorOutput:
    """One forward pass.

    Attributes:
        saliency: ``(B, H, W)`` map in (0, 1) at the input size.
        scores: ``(B, P)`` prioritisation scores (``-inf`` for padded or removed proposals).
        kept: ``(B, k)`` indices of the kept proposals, highest weight first (``-1`` where an image
            has fewer than ``k`` valid proposals).
        weights: ``(B, k)`` softmax weights of the kept proposals (0 where ``kept`` is -1).
    """

    saliency: torch.Tensor
    scores: torch.Tensor
    kept: torch.Tensor
    weights: torch.Tensor


class ExplainableSaliencyPredictor(nn.Module):
    """Saliency predictor that selects and weights semantic proposals (see the module docstring)."""

    def __init__(self, config: PredictorModelConfig):
        super().__init__()
        _check_logit_lens(config)
        self.config = config
        self.backbone = DilatedResNet(config.backbone, config.backbone_width)
        if config.backbone_weights:
            load_backbone_weights(self.backbone, config.backbone_weights)
        d = config.feature_dim
        image_lens = config.logit_lens_channels if config.logit_lens == "topk" else 0
        self.adapter = nn.Sequential(
            nn.Conv2d(self.backbone.out_channels + image_lens, d, 3, padding=1), nn.ReLU(inplace=True)
        )
        # What a proposal's mask refines and pools: the features, and its phrase's lens maps with --logit_lens phrases.
        self.proposal_dim = d + (config.logit_lens_channels if config.logit_lens == "phrases" else 0)
        self.refine = nn.Sequential(
            nn.Conv2d(self.proposal_dim + 1, config.refine_dim, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(config.refine_dim, config.refine_dim, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(config.refine_dim, 1, 3, padding=1),
        )
        # With scores on, a prototype carries its proposal's exported score as one more channel.
        self.prototype_dim = self.proposal_dim + int(config.use_proposal_scores)
        self.priority = nn.Conv2d(self.prototype_dim, 1, 1)
        self.decoder = nn.Conv2d(d + self.prototype_dim, 1, 1)

    def forward(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        valid: torch.Tensor,
        proposal_scores: torch.Tensor,
        topk: int,
        lens: torch.Tensor | None = None,
    ) -> PredictorOutput:
        """Predict saliency.

        Args:
            images: ``(B, 3, H, W)`` normalised images.
            masks: ``(B, P, H, W)`` proposal masks in [0, 1] (P may be 0).
            valid: ``(B, P)`` bool, False for padding or for proposals removed on purpose.
            proposal_scores: ``(B, P)`` exported proposal scores in [0, 1].
            topk: how many proposals to keep per image.
            lens: logit-lens features at the input size (``FixationDataset``): ``(B, C, H, W)`` with
                ``logit_lens`` "topk", ``(B, P, C, H, W)`` with "phrases", None with "off".
        """
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        mode, channels = self.config.logit_lens, self.config.logit_lens_channels
        rank = {"off": None, "topk": 4, "phrases": 5}[mode]
        if (lens is None) != (rank is None) or (lens is not None and (lens.dim(), lens.shape[-3]) != (rank, channels)):
            found = None if lens is None else tuple(lens.shape)
            raise ValueError(f"a model with --logit_lens {mode} --logit_lens_channels {channels} got lens {found}")
        b, _, h, w = images.shape
        backbone = self.backbone(images)
        if mode == "topk":
            backbone = torch.cat([backbone, F.adaptive_avg_pool2d(lens, backbone.shape[-2:])], dim=1)
        feats = self.adapter(backbone)  # (B, D, h8, w8)
        d, fh, fw = feats.shape[1:]
        p = masks.shape[1]
        k = min(topk, p)
        if not self.config.use_proposals or k == 0:
            combined = feats.new_zeros((b, self.prototype_dim, fh, fw))
            scores = feats.new_full((b, p), float("-inf"))
            kept = torch.full((b, 0), -1, dtype=torch.long, device=feats.device)
            weights = feats.new_zeros((b, 0))
        else:
            small = F.adaptive_avg_pool2d(masks.reshape(b * p, 1, h, w), (fh, fw))
            rep = feats.unsqueeze(1).expand(b, p, d, fh, fw).reshape(b * p, d, fh, fw)
            if mode == "phrases":
                rep = torch.cat([rep, F.adaptive_avg_pool2d(lens.reshape(b * p, channels, h, w), (fh, fw))], dim=1)
            refined = torch.sigmoid(self.refine(torch.cat([rep, small], dim=1)))  # (B*P, 1, fh, fw)
            masked = rep * refined
            prototypes = masked.sum((2, 3)) / refined.sum((2, 3)).clamp_min(1e-6)  # (B*P, D)
            head_in = masked
            if self.config.use_proposal_scores:
                prototypes = torch.cat([prototypes, proposal_scores.reshape(b * p, 1)], dim=1)
                # A constant plane, so the score's pull does not shrink with the object's area.
                plane = proposal_scores.reshape(b * p, 1, 1, 1).expand(b * p, 1, fh, fw)
                head_in = torch.cat([masked, plane], dim=1)
            scores = self.priority(head_in).mean((2, 3)).reshape(b, p)
            scores = scores.masked_fill(~valid, float("-inf"))
            top_scores, kept = scores.topk(k, dim=1)
            # Images with fewer than k valid proposals: their extra picks are -inf and get weight 0.
            missing = torch.isinf(top_scores)
            weights = torch.softmax(top_scores.masked_fill(missing, -1e9), dim=1).masked_fill(missing, 0.0)
            kept = kept.masked_fill(missing, -1)
            pd = self.prototype_dim
            painted = (refined * prototypes[:, :, None, None]).reshape(b, p, pd, fh, fw)
            gather = kept.clamp_min(0)[:, :, None, None, None].expand(b, k, pd, fh, fw)
            combined = (torch.gather(painted, 1, gather) * weights[:, :, None, None, None]).sum(1)
        logits = self.decoder(torch.cat([feats, combined], dim=1))
        saliency = torch.sigmoid(F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False))
        return PredictorOutput(saliency=saliency[:, 0], scores=scores, kept=kept, weights=weights)


def _check_logit_lens(config: PredictorModelConfig) -> None:
    """Reject logit-lens settings that do not fit together, naming the flags."""
    if config.logit_lens not in ("off", "phrases", "topk"):
        raise ValueError(f"--logit_lens must be off, phrases or topk, got {config.logit_lens!r}")
    if config.logit_lens_channels < 0 or (config.logit_lens == "off") != (config.logit_lens_channels == 0):
        raise ValueError(
            f"--logit_lens_channels {config.logit_lens_channels} with --logit_lens {config.logit_lens}: it must be "
            "positive with features (the trainer takes it from the export when left 0) and 0 without"
        )
    if config.logit_lens == "phrases" and not config.use_proposals:
        raise ValueError("--logit_lens phrases gives each proposal its features; it needs --use_proposals true")
