"""One evaluation report: the model's metrics, the centre-bias baseline, faithfulness, explanations."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .dataset import FixationDataset
from .evaluation import Prediction, centre_bias_map, explain, predict, score_maps
from .faithfulness import deletion_curve
from .model import ExplainableSaliencyPredictor


def evaluation_report(
    model: ExplainableSaliencyPredictor,
    dataset: FixationDataset,
    topk: int,
    deletion_steps: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    seed: int = 0,
    sauc_splits: int = 100,
    progress: bool = True,
) -> tuple[dict, list[Prediction]]:
    """Score the model and a centre-bias Gaussian on ``dataset``; add deletion curves when proposals are used.

    Deletion curves remove ``deletion_steps`` (default ``topk``) proposals per image, in weight order and
    in random order. Returns the JSON-ready report and the model's predictions.
    """
    predictions = predict(model, dataset, topk, batch_size, device, progress=progress)
    size = dataset.image_size
    report: dict = {
        "num_images": len(dataset),
        "topk": topk,
        "model": score_maps(dataset, [p.saliency for p in predictions], sauc_splits, seed=seed, progress=progress),
        "centre_bias": score_maps(
            dataset, [centre_bias_map(size, size)] * len(dataset), sauc_splits, seed=seed, progress=progress
        ),
    }
    if model.config.use_proposals and dataset.export is not None:
        steps = deletion_steps or topk
        report["faithfulness"] = {}
        for order in ("weight", "random"):
            curve = deletion_curve(model, dataset, topk, steps, order, seed, batch_size, device, progress)
            report["faithfulness"][order] = {**asdict(curve), "drop": curve.drop}
    return report, predictions


def write_explanations(predictions: list[Prediction], dataset: FixationDataset, path: str | Path) -> None:
    """One JSON line per image: its key and the kept proposals with weights, phrases and reasons."""
    if dataset.export is None:
        raise ValueError("write_explanations needs a dataset with exported proposals")
    with open(path, "w") as f:
        f.writelines(
            json.dumps({"image_id": p.key, "selected": explain(p, dataset.export)}) + "\n" for p in predictions
        )
