"""Faithfulness of the explanations: remove the top-weighted proposals one at a time and watch NSS.

At step 0 the model sees every proposal. At each following step the proposal it currently weights
highest (or, for the control, a random remaining one) is removed and the map is predicted again. If
the kept proposals really drive the map, NSS falls faster under weight order than under random order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dataset import FixationDataset
from .evaluation import predict, resize_map
from .fixations import fixation_map
from .metrics import nss
from .model import ExplainableSaliencyPredictor


@dataclass
class DeletionCurve:
    """Mean NSS after removing 0, 1, ..., ``len(nss) - 1`` proposals, and the normalised area under it."""

    order: str
    nss: list[float]
    area: float

    @property
    def drop(self) -> float:
        return self.nss[0] - self.nss[-1]


def _mean_nss(dataset: FixationDataset, predictions) -> float:
    values = []
    for p in predictions:
        r = dataset.records[p.index]
        values.append(float(nss(resize_map(p.saliency, r.height, r.width), fixation_map(r.points, r.height, r.width))))
    return float(np.mean(values))


def deletion_curve(
    model: ExplainableSaliencyPredictor,
    dataset: FixationDataset,
    topk: int,
    steps: int,
    order: str = "weight",
    seed: int = 0,
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = True,
) -> DeletionCurve:
    """Remove ``steps`` proposals per image one at a time, in ``order`` ``"weight"`` or ``"random"``.

    The area is the trapezoid area under the mean-NSS curve with the x axis scaled to [0, 1];
    a faithful model has a lower area under weight order than under random order.
    """
    if order not in ("weight", "random"):
        raise ValueError(f"order must be 'weight' or 'random', got {order!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    rng = np.random.default_rng(seed)
    removed: list[set[int]] = [set() for _ in range(len(dataset))]
    curve = []
    for step in range(steps + 1):
        predictions = predict(model, dataset, topk, batch_size, device, removed, progress=progress)
        curve.append(_mean_nss(dataset, predictions))
        if step == steps:
            break
        for p in predictions:
            if order == "weight":
                if p.kept:
                    removed[p.index].add(p.kept[0])
            else:
                remaining = [j for j in dataset.proposal_order(p.index) if j not in removed[p.index]]
                if remaining:
                    removed[p.index].add(int(rng.choice(remaining)))
    area = float(np.trapezoid(curve, np.linspace(0.0, 1.0, len(curve))))
    return DeletionCurve(order=order, nss=curve, area=area)
