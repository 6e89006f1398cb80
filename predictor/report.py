"""One evaluation report: the model's metrics, the centre-bias baseline, the proposals-off ablation, faithfulness,
explanations, and (for the main job's chain report) each image's predicted maps and scores."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from .dataset import FixationDataset
from .evaluation import Prediction, centre_bias_map, explain, predict, resize_map, score_maps
from .faithfulness import deletion_curve
from .fixations import fixation_map
from .metrics import cc, nss
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


def write_explanations(
    predictions: list[Prediction],
    dataset: FixationDataset,
    path: str | Path,
    extra: Sequence[Mapping] | None = None,
) -> None:
    """One JSON line per image: its key and the kept proposals with weights, phrases and reasons (and the fields of
    ``extra[i]`` on line ``i``, e.g. the paths of its saved maps)."""
    if dataset.export is None:
        raise ValueError("write_explanations needs a dataset with exported proposals")
    extra = extra if extra is not None else [{}] * len(predictions)
    with open(path, "w") as f:
        f.writelines(
            json.dumps({"image_id": p.key, "selected": explain(p, dataset.export), **more}) + "\n"
            for p, more in zip(predictions, extra, strict=True)
        )


def save_maps(maps: Sequence[np.ndarray], folder: str | Path, base: str | Path) -> list[str]:
    """Write ``maps[i]`` as ``folder/<i>.png`` (8-bit greyscale, 255 at the map's maximum); return each path relative
    to ``base``."""
    folder, base = Path(folder), Path(base)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, saliency in enumerate(maps):
        saliency = np.maximum(np.nan_to_num(np.asarray(saliency, dtype=np.float64)), 0.0)
        peak = saliency.max()
        pixels = np.zeros(saliency.shape, np.uint8) if peak <= 0 else np.round(255 * saliency / peak).astype(np.uint8)
        path = folder / f"{i:04d}.png"
        Image.fromarray(pixels, mode="L").save(path)
        names.append(path.relative_to(base).as_posix())
    return names


def image_scores(dataset: FixationDataset, index: int, saliency: np.ndarray) -> dict[str, float | None]:
    """NSS and CC of one map on item ``index`` at the image's size, as :func:`~predictor.evaluation.score_maps`
    computes them (None where a metric is undefined, e.g. a constant map)."""
    record = dataset.records[index]
    prediction = resize_map(saliency, record.height, record.width)
    scores: dict[str, float | None] = {}
    for name, metric, target in (
        ("NSS", nss, lambda: fixation_map(record.points, record.height, record.width)),
        ("CC", cc, lambda: dataset.full_density(index)),
    ):
        try:
            scores[name] = float(metric(prediction, target()))
        except ValueError:
            scores[name] = None
    return scores
