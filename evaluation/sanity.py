"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018): cascading model-parameter randomisation.

The text decoder is re-initialised cumulatively from the top: first the read-out (lm_head and final norm), then
the last decoder layer, the last two, ... down to every layer. After each step the maps of the same completions
are recomputed (the tracer's scoring forward, each baseline's ``attribute``) and compared with the maps of the
untouched model by their Spearman rank correlation over the image-token grid. A map that explains the model
decorrelates as its weights are destroyed; a map that stays put reads the input (e.g. edges of the image), not
the model. The vision tower and the input embeddings are never re-initialised.

Parameters are re-drawn as a fresh transformers model draws them (``PreTrainedModel._init_weights``): weights
normal(0, ``initializer_range`` of the text config), biases 0, norm gains 1. ``_init_weights`` itself is not called: since
transformers 5 it leaves weights loaded from a checkpoint untouched. The model is changed in place (so the tracer
and the baselines, which hold it, see the change) and every re-initialised parameter is restored on exit, also
when an exception is raised.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import BatchFeature

from saliency import Attribution, ModelAdapter, SaliencyMaps, SaliencyTracer

from .generation import completion_maps


def spearman(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> float:
    """Spearman rank correlation of two equally long vectors (ties: average ranks); 0.0 if either is constant."""
    ranks_a, ranks_b = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if len(ranks_a) != len(ranks_b):
        raise ValueError(f"spearman needs vectors of one length, got {len(ranks_a)} and {len(ranks_b)}")
    ranks_a, ranks_b = ranks_a - ranks_a.mean(), ranks_b - ranks_b.mean()
    norm = np.sqrt((ranks_a**2).sum() * (ranks_b**2).sum())
    if norm == 0:
        return 0.0
    return float(np.clip((ranks_a * ranks_b).sum() / norm, -1.0, 1.0))


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(first + (counts - 1) / 2, counts)
    return ranks


@torch.no_grad()
def reinitialise(module: nn.Module, std: float, seed: int) -> None:
    """Re-draw every parameter of ``module``: norm gains 1, biases 0, all else normal(0, ``std``) from ``seed``."""
    generator = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    for sub in module.modules():
        norm = "Norm" in type(sub).__name__  # RMSNorm classes are per family (Qwen2RMSNorm, ...), as in transformers
        for name, param in sub.named_parameters(recurse=False):
            if norm or name == "bias":
                param.fill_(1.0 if norm and name == "weight" else 0.0)
            else:
                param.normal_(0.0, std, generator=generator)


def randomisation_steps(adapter: ModelAdapter) -> list[tuple[str, list[nn.Module]]]:
    """The cascade: per step its label (what is re-initialised in total) and the modules it adds to the earlier ones.

    Step 0 (``"original"``) changes nothing. The read-out step re-initialises the final norm and the lm_head, unless
    the lm_head shares its weight with the input embeddings (tied), when it is left alone. Raises ValueError when
    a weight is not floating point (a 4/8-bit quantized model cannot be re-initialised).
    """
    layers = list(adapter.text_model.layers)
    tied = adapter.lm_head.weight is adapter.model.get_input_embeddings().weight
    head = [adapter.final_norm] if tied else [adapter.final_norm, adapter.lm_head]
    quantized = [(n, p.dtype) for m in [*head, *layers] for n, p in m.named_parameters() if not p.is_floating_point()]
    if quantized:
        name, dtype = quantized[0]
        raise ValueError(
            f"the sanity check re-initialises the decoder, but its weight {name!r} is quantized ({dtype}); "
            "evaluate with --sanity_samples 0"
        )
    head_label = "final norm" if tied else "lm_head+norm"
    last = len(layers) - 1
    steps = [("original", []), (head_label, head)]
    for first in range(last, -1, -1):
        span = f"layer {last}" if first == last else f"layers {first}-{last}"
        steps.append((f"{head_label}, {span}", [layers[first]]))
    return steps


@contextmanager
def _restored(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Inside the block ``modules`` may be changed in place; their parameters are put back on exit (copies on CPU)."""
    saved = [(p, p.detach().to("cpu", copy=True)) for module in modules for p in module.parameters()]
    try:
        yield
    finally:
        with torch.no_grad():
            for param, value in saved:
                param.copy_(value)


@dataclass
class SanityResult:
    """Rank correlations of each method's maps with its maps of the untouched model, per randomisation step.

    ``correlations[method]`` is (steps, rows): the Spearman correlation of row r's map after step s with its
    original map. Rows whose original map of that method is constant (e.g. empty) hold no ranking to compare with
    and are left out of that method; a map that becomes constant scores 0.
    """

    steps: list[str]
    correlations: dict[str, np.ndarray]

    def to_dict(self) -> dict:
        """``{"steps": [labels], "methods": {method: {"spearman", "abs_spearman", "n_rows"}}}``, means over rows.

        ``abs_spearman`` averages |correlation|: rows whose ranking flips do not cancel rows whose ranking stays.
        """
        methods = {}
        for method, values in self.correlations.items():
            rows = values.shape[1]
            methods[method] = {
                "spearman": values.mean(1).tolist() if rows else [None] * len(self.steps),
                "abs_spearman": np.abs(values).mean(1).tolist() if rows else [None] * len(self.steps),
                "n_rows": rows,
            }
        return {"steps": self.steps, "methods": methods}


def cascading_randomisation(
    tracer: SaliencyTracer,
    samples: Sequence[tuple[BatchFeature, torch.Tensor]],
    *,
    kinds: Sequence[str] = ("flow", "direct"),
    baselines: Sequence[Attribution] = (),
    seed: int = 0,
) -> SanityResult:
    """Maps of each sample after each step of :func:`randomisation_steps`, compared with the original maps.

    Each sample is ``(inputs, completion_ids)``: one row's processor inputs (on the model's device) and the
    completion whose maps are recomputed; it must have a map (valid format, an image). ``kinds`` are the tracer's
    maps, recomputed with `SaliencyTracer.score`; ``baselines`` must hold the tracer's model. The module re-drawn
    at step s is seeded with ``seed + s``. The model's weights are restored on return.
    """
    adapter = tracer.adapter
    others = [b.kind for b in baselines if b.adapter.model is not adapter.model]
    if others:
        raise ValueError(f"baselines {others} explain another model than the tracer's; they would not be randomised")
    steps = randomisation_steps(adapter)
    std = getattr(adapter.text_config, "initializer_range", None) or 0.02
    methods = [*kinds, *(b.kind for b in baselines)]
    original: list[dict[str, np.ndarray]] = []
    correlations = {m: np.zeros((len(steps), len(samples))) for m in methods}
    with _restored([module for _, modules in steps for module in modules]):
        for s, (_, modules) in enumerate(tqdm(steps, desc="sanity: randomising the decoder", unit="step")):
            for module in modules:
                reinitialise(module, std, seed + s)
            for r, (inputs, completion_ids) in enumerate(samples):
                maps = _grid_maps(tracer, kinds, baselines, inputs, completion_ids)
                if s == 0:
                    original.append(maps)
                for method in methods:
                    correlations[method][s, r] = spearman(original[r][method], maps[method])
    keep = {m: [r for r in range(len(samples)) if np.ptp(original[r][m]) > 0] for m in methods}
    return SanityResult([label for label, _ in steps], {m: correlations[m][:, keep[m]] for m in methods})


def _grid_maps(
    tracer: SaliencyTracer,
    kinds: Sequence[str],
    baselines: Sequence[Attribution],
    inputs: BatchFeature,
    completion_ids: torch.Tensor,
) -> dict[str, np.ndarray]:
    """The answer map (relu of the answer-summed scores) of every method on its patch grids, flattened."""
    by_method: dict[str, SaliencyMaps] = {}
    if kinds:  # one scoring forward gives every kind of the tracer
        traced = completion_maps(tracer.score, inputs, completion_ids)
        by_method = {kind: traced for kind in kinds}
    by_method |= {b.kind: completion_maps(b.attribute, inputs, completion_ids) for b in baselines}
    out = {}
    for method, maps in by_method.items():
        if not maps.has_map:
            raise ValueError(f"the sanity check needs completions with a map; this one has none: {maps.reason}")
        out[method] = torch.cat([image.grid.flatten() for image in maps.answer_map(method)]).numpy()
    return out
