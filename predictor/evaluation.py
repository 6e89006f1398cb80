"""Predict, explain and score saliency maps on a :class:`FixationDataset`; the centre-bias baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .dataset import FixationDataset, collate
from .fixations import fixation_map
from .metrics import auc_judd, auc_shuffled, cc, kld, nss, sim
from .model import ExplainableSaliencyPredictor

METRICS = ("CC", "KLD", "NSS", "SIM", "AUC_Judd", "sAUC")
LOWER_IS_BETTER = frozenset({"KLD"})


@dataclass
class Prediction:
    """The model's map for one dataset item, and the proposals it kept.

    ``kept`` indexes the export record's ``proposals`` list, highest weight first.
    """

    key: str
    index: int
    saliency: np.ndarray  # (image_size, image_size)
    kept: list[int]
    weights: list[float]


@torch.no_grad()
def predict(
    model: ExplainableSaliencyPredictor,
    dataset: FixationDataset,
    topk: int,
    batch_size: int = 8,
    device: str = "cpu",
    removed: Sequence[set[int]] | None = None,
    progress: bool = True,
) -> list[Prediction]:
    """Run the model over ``dataset``; ``removed[i]`` lists export proposal indices to hide from item ``i``."""
    model.eval().to(device)
    out: list[Prediction] = []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
        orders = [dataset.proposal_order(i) for i in batch["indices"]]
        valid = batch["valid"].clone()
        if removed is not None:
            for row, (i, order) in enumerate(zip(batch["indices"], orders)):
                for slot, j in enumerate(order):
                    if j in removed[i]:
                        valid[row, slot] = False
        lens = None if batch["lens"] is None else batch["lens"].to(device)
        result = model(
            batch["images"].to(device),
            batch["masks"].to(device),
            valid.to(device),
            batch["scores"].to(device),
            topk,
            lens,
        )
        for row, (key, i, order) in enumerate(zip(batch["keys"], batch["indices"], orders)):
            kept = result.kept[row].tolist()
            pairs = [(order[s], w) for s, w in zip(kept, result.weights[row].tolist()) if s >= 0]
            out.append(
                Prediction(key, i, result.saliency[row].cpu().numpy(), [j for j, _ in pairs], [w for _, w in pairs])
            )
    return out


def resize_map(saliency: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``(height, width)``."""
    t = torch.from_numpy(np.asarray(saliency, dtype=np.float64))[None, None]
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def centre_bias_map(height: int, width: int, sigma_frac: float = 0.25) -> np.ndarray:
    """Anisotropic Gaussian centred on the image, ``sigma`` = ``sigma_frac`` of each side."""
    ys = (np.arange(height) + 0.5 - height / 2) / (sigma_frac * height)
    xs = (np.arange(width) + 0.5 - width / 2) / (sigma_frac * width)
    return np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))


def _other_fixations(dataset: FixationDataset, index: int, rng: np.random.Generator, max_images: int) -> np.ndarray:
    r = dataset.records[index]
    others = [i for i in range(len(dataset)) if i != index]
    if not others:
        raise ValueError("shuffled AUC needs fixations from at least one other image")
    chosen = rng.choice(others, size=min(max_images, len(others)), replace=False)
    pts = [dataset.records[i].points / [dataset.records[i].width, dataset.records[i].height] for i in chosen]
    return fixation_map(np.concatenate(pts) * [r.width, r.height], r.height, r.width)


def score_maps(
    dataset: FixationDataset,
    maps: Sequence[np.ndarray],
    sauc_splits: int = 100,
    sauc_other_images: int = 50,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Mean of every metric in :data:`METRICS` over the dataset, each computed at the original image size.

    ``maps[i]`` is item ``i``'s predicted map at any size; it is resized bilinearly to the image size.
    Shuffled-AUC negatives pool the fixations of up to ``sauc_other_images`` other images.
    """
    if len(maps) != len(dataset):
        raise ValueError(f"score_maps: {len(maps)} maps for {len(dataset)} dataset items")
    rng = np.random.default_rng(seed)
    totals = dict.fromkeys(METRICS, 0.0)
    for i in tqdm(range(len(dataset)), desc="score", disable=not progress, leave=False):
        r = dataset.records[i]
        pred = resize_map(maps[i], r.height, r.width)
        density = dataset.full_density(i)
        fix = fixation_map(r.points, r.height, r.width)
        values = {
            "CC": float(cc(pred, density)),
            "KLD": float(kld(pred, density)),
            "NSS": float(nss(pred, fix)),
            "SIM": float(sim(pred, density)),
            "AUC_Judd": auc_judd(pred, fix, seed=seed + i),
            "sAUC": auc_shuffled(
                pred, fix, _other_fixations(dataset, i, rng, sauc_other_images), n_splits=sauc_splits, seed=seed + i
            ),
        }
        for name, value in values.items():
            totals[name] += value
    return {name: total / len(dataset) for name, total in totals.items()}


def explain(prediction: Prediction, export: dict) -> list[dict]:
    """The kept proposals of ``prediction`` with their weights, phrases and reasons, highest weight first."""
    record = export[prediction.key]
    return [
        {
            "proposal": j,
            "weight": w,
            "phrase": record.proposals[j].phrase,
            "reason": record.proposals[j].reason,
            "box": list(record.proposals[j].box),
        }
        for j, w in zip(prediction.kept, prediction.weights)
    ]
