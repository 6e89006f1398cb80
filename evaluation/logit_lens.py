"""Logit-lens patch features (after LogitGaze): image tokens' hidden states read through the final norm and lm_head.

For each image token j and chosen decoder layer l, the logit lens is ``softmax(lm_head(norm(h_l[j])))``, the
vocabulary distribution the model would read out if its residual stream stopped after layer l (``h_l``: the output
of decoder layer l; the last layer gives the model's own next-token distribution at j). Two reductions give a
patch vector of fixed meaning:

- ``phrases``: per group of token ids (a proposal phrase's tokens), the lens probability mass on those ids;
- ``topk``: the k largest lens probabilities, in decreasing order.

:meth:`LogitLensCapture.capturing` holds forward hooks on the chosen decoder layers for the duration of a block. Of
the first full-model forward run inside it (the prefill of a traced ``generate``, or the tracer's scoring forward:
the pass that makes the saliency maps) it keeps the hidden states of the image positions only; later forwards
(decode steps) are counted and otherwise ignored. The features are computed from those states on request, without another forward.
The hooks are removed on exit, also when an exception is raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from saliency.adapters import adapter_for
from saliency.tracer import layer_indices


class LogitLensCapture:
    """The image-token hidden states of one forward at chosen decoder layers, and the lens features read from them.

    Args:
        model: a VLM the saliency tracer supports (its family adapter says where layers, norm and lm_head are).
        layers: decoder layers whose outputs are read (negative indices count from the end); a ValueError names
            those the model lacks.
        chunk_elements: at most this many lens logits are held at once.

    with lens.capturing():                          # lens = LogitLensCapture(model, [-2, -1])
        traced = tracer.generate(**inputs)          # the maps' own pass: no second forward
    features = lens.topk_probabilities(0, k=5)      # (5, 2, N) for sample 0's N image tokens

    ``forwards`` counts the full-model forwards run in the last ``capturing`` block; only the first is kept.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int], chunk_elements: int = 1 << 24):
        self.adapter = adapter_for(model)
        self.layers = layer_indices(layers, len(self.adapter.text_model.layers))
        self.chunk_elements = chunk_elements
        self.forwards = 0
        self._positions: list[torch.Tensor] = []
        self._hidden: dict[int, list[torch.Tensor]] = {}

    @contextmanager
    def capturing(self) -> Iterator[LogitLensCapture]:
        """Hook the model for the block (what an earlier block captured is dropped); every hook is removed on exit."""
        self.forwards, self._positions, self._hidden = 0, [], {}
        decoder_layers = self.adapter.text_model.layers

        def input_hook(module, args, kwargs):
            self.on_model_inputs(kwargs)

        def output_hook(layer: int):
            def hook(module, args, output):
                self.on_layer_output(layer, output[0] if isinstance(output, tuple) else output)

            return hook

        handles = []
        try:
            handles.append(self.adapter.model.register_forward_pre_hook(input_hook, with_kwargs=True))
            handles += [decoder_layers[layer].register_forward_hook(output_hook(layer)) for layer in self.layers]
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def on_model_inputs(self, kwargs: dict) -> None:
        """Count a forward; at the first, note each sample's image positions from its ``input_ids``."""
        self.forwards += 1
        if self.forwards > 1:
            return
        input_ids = kwargs.get("input_ids")
        if input_ids is None:
            raise ValueError("logit-lens capture needs input_ids in the forward (inputs_embeds-only is not supported)")
        self._positions = [row.nonzero().squeeze(-1) for row in input_ids == self.adapter.image_token_id]

    def on_layer_output(self, layer: int, hidden: torch.Tensor) -> None:
        """Keep the image positions of layer ``layer``'s (B, L, D) output during the first forward."""
        if self.forwards == 1:
            self._hidden[layer] = [h[p].detach() for h, p in zip(hidden, self._positions)]

    @property
    def num_samples(self) -> int:
        return len(self._positions)

    def hidden_states(self, sample: int) -> torch.Tensor:
        """(layers, N, D) hidden states of sample ``sample``'s N image positions, in sequence order."""
        if self.forwards == 0:
            raise RuntimeError("no forward ran inside the logit-lens capture")
        if not 0 <= sample < self.num_samples:
            raise IndexError(f"sample {sample} out of range: the captured forward held {self.num_samples} samples")
        return torch.stack([self._hidden[layer][sample] for layer in self.layers])

    @torch.no_grad()
    def _reduced(self, sample: int, reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``reduce`` of the lens log-probabilities (rows, vocab) -> (rows, C), stacked as (C, layers, N)."""
        hidden = self.hidden_states(sample)
        vocab = self.adapter.lm_head.out_features
        chunk = max(1, self.chunk_elements // vocab)
        per_layer = []
        for states in hidden:
            parts = []
            for start in range(0, max(len(states), 1), chunk):  # one (empty) chunk for an image-free sample
                # forward(), not __call__: hooks on the final norm (the tracer's) must not see these rows.
                normed = self.adapter.final_norm.forward(states[start : start + chunk])
                parts.append(reduce(self.adapter.lm_head(normed).float().log_softmax(-1)))
            per_layer.append(torch.cat(parts))
        return torch.stack(per_layer).permute(2, 0, 1)

    def phrase_probabilities(self, sample: int, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """(len(token_ids), layers, N): per group of token ids, the lens probability mass on its distinct ids."""
        groups = [sorted(set(ids)) for ids in token_ids]
        if any(not ids for ids in groups):
            raise ValueError("every phrase needs at least one token id")
        select = torch.zeros(self.adapter.lm_head.out_features, len(groups))
        for g, ids in enumerate(groups):
            select[ids, g] = 1.0
        return self._reduced(sample, lambda log_probs: log_probs.exp() @ select.to(log_probs.device))

    def topk_probabilities(self, sample: int, k: int) -> torch.Tensor:
        """(k, layers, N): the k largest lens probabilities of each image position, largest first."""
        if not 1 <= k <= self.adapter.lm_head.out_features:
            raise ValueError(f"k must lie in [1, vocabulary size {self.adapter.lm_head.out_features}], got {k}")
        return self._reduced(sample, lambda log_probs: log_probs.topk(k, dim=-1).values.exp())
