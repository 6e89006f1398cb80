"""Deletion and insertion curves: does the answer depend on the image patches a saliency map ranks highest?

For one row (prompt with one or more images, and the model's own completion) and an order of its image-token
patches (the merged patch grid the maps live on, most salient first):

- deletion: the top ``k/steps`` fraction of the patches is removed, for k = 0..steps;
- insertion: every patch is removed except the top ``k/steps`` fraction.

A patch is removed by replacing its image-token embedding, at the input of the language model, with zeros
(`saliency.baselines.replaced_image_embeddings`); the vision tower and every other token are untouched. The score at each point
is the teacher-forced log-probability of the original answer tokens (summed), given the prompt and the original
thinking. A faithful map makes the deletion curve fall fast (low area under it) and the insertion curve rise fast
(high area); a random patch order is the reference both are compared with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import BatchFeature

from saliency import ModelAdapter, SaliencyMaps
from saliency.baselines import replaced_image_embeddings
from saliency.rows import completion_rows

from .metrics import mean_interval

CURVES = ("deletion", "insertion")


def patch_order(maps: SaliencyMaps, kind: str) -> torch.Tensor:
    """The sample's image columns on the patch grid (indices among its image tokens), most salient first.

    Columns are ranked by the answer-summed score of ``kind`` before the relu of the aggregate map, so that the
    order among non-positive columns is kept rather than tied; columns off the grid (a CLS feature) are left out.
    """
    if not maps.has_map:
        raise ValueError(f"this completion has no saliency map: {maps.reason}")
    start, end = maps.spans.answer
    total = maps.scores[kind][start:end].sum(0)
    columns = torch.cat([image.positions for image in maps.images])
    return columns[torch.argsort(total[columns], descending=True, stable=True)]


def random_orders(columns: torch.Tensor, count: int, seed: int) -> list[torch.Tensor]:
    """``count`` random permutations of ``columns`` drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return [columns[torch.randperm(len(columns), generator=generator)] for _ in range(count)]


def auc(fractions: np.ndarray, curve: np.ndarray) -> float:
    """Area under a curve sampled at ``fractions`` of [0, 1] (trapezoid rule)."""
    return float(np.trapezoid(curve, fractions))


@torch.no_grad()
def answer_log_prob_curves(
    model: nn.Module,
    adapter: ModelAdapter,
    inputs: BatchFeature | Mapping[str, torch.Tensor],
    completion_ids: torch.Tensor,
    answer: tuple[int, int],
    orders: Sequence[torch.Tensor],
    *,
    steps: int = 10,
    batch_size: int = 16,
) -> dict[str, np.ndarray]:
    """Deletion and insertion curves of one sample, one per order: ``{"deletion": (orders, steps + 1), ...}``.

    ``inputs`` are the processor's inputs for the one sample (unpadded ``input_ids``, ``attention_mask`` and vision
    inputs); ``answer`` is the completion's answer span; each order lists image columns, most important first.
    """
    prompt_ids = inputs["input_ids"]
    if prompt_ids.shape[0] != 1:
        raise ValueError(f"answer_log_prob_curves scores one sample at a time, got a batch of {prompt_ids.shape[0]}")
    device = prompt_ids.device
    completion_ids = completion_ids.to(device)
    input_ids = torch.cat([prompt_ids, completion_ids[None]], 1)
    image_positions = (prompt_ids[0] == adapter.image_token_id).nonzero().squeeze(-1)
    prompt_length = prompt_ids.shape[1]
    rows = completion_rows(prompt_length, torch.arange(*answer, device=device))
    targets = completion_ids[answer[0] : answer[1]]

    masks = []
    for order in orders:
        for curve in CURVES:
            for k in range(steps + 1):
                top = image_positions[order[: round(k / steps * len(order))].to(device)]
                replace = torch.zeros(input_ids.shape[1], dtype=torch.bool, device=device)
                if curve == "deletion":
                    replace[top] = True
                else:
                    replace[image_positions[order.to(device)]] = True
                    replace[top] = False
                masks.append(replace)
    masks = torch.stack(masks)

    model_inputs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in model_inputs:  # the completion holds text tokens only (type 0)
        types = model_inputs["mm_token_type_ids"]
        model_inputs["mm_token_type_ids"] = torch.cat([types, torch.zeros_like(completion_ids)[None]], 1)
    attention_mask = torch.ones_like(input_ids)
    scores = []
    for start in range(0, len(masks), batch_size):
        replace = masks[start : start + batch_size]
        copies = len(replace)
        batch = {k: torch.cat([v] * copies) for k, v in model_inputs.items()}
        with replaced_image_embeddings(adapter, replace, torch.zeros_like):
            logits = model(
                input_ids=input_ids.expand(copies, -1),
                attention_mask=attention_mask.expand(copies, -1),
                logits_to_keep=rows,
                **batch,
            ).logits
        log_probs = logits.float().log_softmax(-1).gather(-1, targets[None, :, None].expand(copies, -1, 1))
        scores.append(log_probs.sum((1, 2)).cpu())
    curves = torch.cat(scores).reshape(len(orders), len(CURVES), steps + 1).numpy()
    return {curve: curves[:, i] for i, curve in enumerate(CURVES)}


@dataclass
class FaithfulnessResult:
    """Deletion/insertion curves of each method on every scored row; their means over rows and their areas.

    ``row_curves[method][curve]`` is (rows, steps + 1): row r's curve (averaged over its orders for ``"random"``).
    """

    fractions: np.ndarray
    row_curves: dict[str, dict[str, np.ndarray]]

    @property
    def n_rows(self) -> int:
        return len(next(iter(next(iter(self.row_curves.values())).values())))

    @property
    def curves(self) -> dict[str, dict[str, np.ndarray]]:
        """Mean curve of each method over the rows: ``{method: {"deletion": (steps + 1,), "insertion": ...}}``."""
        return {m: {c: v.mean(0) for c, v in curves.items()} for m, curves in self.row_curves.items()}

    def aucs(self) -> dict[str, dict[str, float]]:
        """``{method: {"deletion": area, "insertion": area, "insertion_minus_deletion": difference}}`` of the means."""
        out = {}
        for method, curves in self.curves.items():
            areas = {curve: auc(self.fractions, curves[curve]) for curve in CURVES}
            out[method] = {**areas, "insertion_minus_deletion": areas["insertion"] - areas["deletion"]}
        return out

    def row_aucs(self) -> dict[str, dict[str, np.ndarray]]:
        """Area under each row's curves: ``{method: {"deletion": (rows,), "insertion": (rows,)}}``."""
        return {
            m: {c: np.array([auc(self.fractions, row) for row in v]) for c, v in curves.items()}
            for m, curves in self.row_curves.items()
        }

    def auc_vs_random(
        self, *, bootstrap_samples: int = 1000, confidence: float = 0.95, seed: int = 0
    ) -> dict[str, dict[str, dict]]:
        """Per-row areas of each method and their paired differences to the random order of the same row.

        ``{method: {"deletion", "insertion", "deletion_minus_random", "insertion_minus_random"}}``, each a
        `evaluation.metrics.mean_interval` over the rows (the same resamples for every entry); the random order
        itself has its two areas only. A faithful map has deletion below random and insertion above it.
        """
        areas = self.row_aucs()
        random = areas.get("random")

        def interval(values: np.ndarray) -> dict:
            return mean_interval(values.tolist(), bootstrap_samples=bootstrap_samples, confidence=confidence, seed=seed)

        out = {}
        for method, rows in areas.items():
            out[method] = {curve: interval(rows[curve]) for curve in CURVES}
            if random is not None and method != "random":
                out[method] |= {f"{c}_minus_random": interval(rows[c] - random[c]) for c in CURVES}
        return out

    def to_dict(self, *, bootstrap_samples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
        """The mean curves, their areas and :meth:`auc_vs_random` (bootstrap settings as there), JSON-ready."""
        return {
            "n_rows": self.n_rows,
            "fractions": self.fractions.tolist(),
            "curves": {m: {c: v.tolist() for c, v in curves.items()} for m, curves in self.curves.items()},
            "auc": self.aucs(),
            "auc_vs_random": self.auc_vs_random(bootstrap_samples=bootstrap_samples, confidence=confidence, seed=seed),
        }


def faithfulness_curves(
    model: nn.Module,
    adapter: ModelAdapter,
    samples: Sequence[tuple[BatchFeature, torch.Tensor, Mapping[str, SaliencyMaps]]],
    *,
    steps: int = 10,
    random_orders_per_row: int = 3,
    seed: int = 0,
    batch_size: int = 16,
) -> FaithfulnessResult:
    """Deletion/insertion curves of each method on each row, plus the random-order baseline (method ``"random"``).

    Each sample is ``(inputs, completion_ids, {method: maps})``: one row's processor inputs, its completion and,
    per method, its maps (a :class:`~saliency.SaliencyMaps` with scores of kind ``method``). All samples must hold
    a map of every method; the random orders of row ``i`` are drawn from ``seed + i``.
    """
    if not samples:
        raise ValueError("faithfulness_curves needs at least one row with a saliency map")
    per_method: dict[str, dict[str, list[np.ndarray]]] = {}
    for i, (inputs, completion_ids, maps_by_method) in enumerate(tqdm(samples, desc="faithfulness", unit="row")):
        orders: dict[str, list[torch.Tensor]] = {m: [patch_order(maps, m)] for m, maps in maps_by_method.items()}
        some_maps = next(iter(maps_by_method.values()))
        columns = torch.cat([image.positions for image in some_maps.images])
        orders["random"] = random_orders(columns, random_orders_per_row, seed + i)
        flat = [order for method_orders in orders.values() for order in method_orders]
        curves = answer_log_prob_curves(
            model, adapter, inputs, completion_ids, some_maps.spans.answer, flat, steps=steps, batch_size=batch_size
        )
        offset = 0
        for method, method_orders in orders.items():
            for curve in CURVES:
                mean = curves[curve][offset : offset + len(method_orders)].mean(0)
                per_method.setdefault(method, {c: [] for c in CURVES})[curve].append(mean)
            offset += len(method_orders)
    return FaithfulnessResult(
        fractions=np.linspace(0.0, 1.0, steps + 1),
        row_curves={m: {c: np.stack(v) for c, v in curves.items()} for m, curves in per_method.items()},
    )
